package certs

import "net"

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
