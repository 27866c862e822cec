package certs

import (
	"errors"
	"fmt"
	"net"
	"strings"
)

// certNames lists a certificate's names: DNS SANs, then IP SANs, falling back
// to the common name when there are no SANs.
func certNames(dns []string, ips []net.IP, cn string) []string {
	names := append([]string(nil), dns...)
	for _, ip := range ips {
		names = append(names, ip.String())
	}
	if len(names) == 0 && cn != "" {
		names = append(names, cn)
	}
	return names
}

// checkName reports whether name can be put in a certificate: a DNS name
// (letters, digits, hyphens; a leading "*." for a wildcard) or an IP address.
func checkName(name string) error {
	if net.ParseIP(name) != nil {
		return nil
	}
	if name == "" || len(name) > 253 {
		return errors.New("not a host name")
	}
	labels := strings.Split(strings.TrimPrefix(name, "*."), ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return errors.New("not a host name")
		}
		for _, r := range l {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return fmt.Errorf("not a host name: character %q", r)
			}
		}
	}
	return nil
}
