// Package testcert makes throwaway certificates for tests: a CA and leaf
// certificates signed by it, as PEM bytes or files. Keys are ECDSA P-256.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority for tests.
type CA struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
}

// NewCA returns a fresh CA valid from an hour ago for a day.
func NewCA(tb testing.TB) *CA {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(tb),
		Subject:               pkix.Name{CommonName: "outrider test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &CA{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// Pool returns a cert pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Leaf issues a server certificate for names (DNS names or IP addresses)
// valid until notAfter, and returns its cert and key PEM.
func (ca *CA) Leaf(tb testing.TB, notAfter time.Time, names ...string) (certPEM, keyPEM []byte) {
	tb.Helper()
	return ca.LeafWith(tb, LeafOptions{NotAfter: notAfter}, names...)
}

// LeafOptions are the extras of [CA.LeafWith].
type LeafOptions struct {
	// NotAfter is the end of validity. If zero, a day from now.
	NotAfter time.Time
	// OCSPServer is the OCSP responder URL put in the authority
	// information access extension. If empty, none.
	OCSPServer string
	// IssuerURL is where the issuer certificate (DER) can be fetched, put
	// in the authority information access extension. If empty, none.
	IssuerURL string
	// MustStaple adds the TLS feature extension (RFC 7633) asking for
	// status_request: clients that enforce it refuse the certificate
	// without a stapled OCSP response.
	MustStaple bool
}

// MustStapleOID is the TLS feature extension (id-pe-tlsfeature).
var MustStapleOID = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 24}

// LeafWith issues a server certificate for names (DNS names or IP
// addresses) with opts, and returns its cert and key PEM.
func (ca *CA) LeafWith(tb testing.TB, opts LeafOptions, names ...string) (certPEM, keyPEM []byte) {
	tb.Helper()
	if opts.NotAfter.IsZero() {
		opts.NotAfter = time.Now().Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(tb),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     opts.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if opts.OCSPServer != "" {
		tmpl.OCSPServer = []string{opts.OCSPServer}
	}
	if opts.IssuerURL != "" {
		tmpl.IssuingCertificateURL = []string{opts.IssuerURL}
	}
	if opts.MustStaple {
		v, err := asn1.Marshal([]int{5}) // status_request
		if err != nil {
			tb.Fatal(err)
		}
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: MustStapleOID, Value: v})
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	return ca.issue(tb, tmpl)
}

// OCSPSigner issues a delegated OCSP responder certificate (extended key
// usage OCSPSigning) and returns its cert and key PEM, for a responder
// such as `openssl ocsp -rsigner … -rkey …`.
func (ca *CA) OCSPSigner(tb testing.TB) (certPEM, keyPEM []byte) {
	tb.Helper()
	return ca.issue(tb, &x509.Certificate{
		SerialNumber: serial(tb),
		Subject:      pkix.Name{CommonName: "outrider test OCSP responder"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning},
	})
}

// KeyPEM returns the CA's private key as PEM.
func (ca *CA) KeyPEM(tb testing.TB) []byte {
	tb.Helper()
	der, err := x509.MarshalECPrivateKey(ca.Key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

// issue signs tmpl for a fresh P-256 key and returns cert and key PEM.
func (ca *CA) issue(tb testing.TB, tmpl *x509.Certificate) (certPEM, keyPEM []byte) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		tb.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
}

// LeafFiles writes a leaf for names into dir as cert.pem and key.pem and
// returns their paths.
func (ca *CA) LeafFiles(tb testing.TB, dir string, names ...string) (certFile, keyFile string) {
	tb.Helper()
	c, k := ca.Leaf(tb, time.Now().Add(24*time.Hour), names...)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, c, 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(keyFile, k, 0o600); err != nil {
		tb.Fatal(err)
	}
	return certFile, keyFile
}

// TLSCert returns a leaf as a tls.Certificate.
func (ca *CA) TLSCert(tb testing.TB, names ...string) tls.Certificate {
	tb.Helper()
	c, k := ca.Leaf(tb, time.Now().Add(24*time.Hour), names...)
	cert, err := tls.X509KeyPair(c, k)
	if err != nil {
		tb.Fatal(err)
	}
	return cert
}

func serial(tb testing.TB) *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// ClientOptions describe a client certificate.
type ClientOptions struct {
	CommonName string
	OrgUnits   []string
	DNSNames   []string
	URIs       []string  // such as spiffe://example.org/ns/prod/sa/web
	NotAfter   time.Time // zero: a day from now
}

// ClientCert is a client certificate issued by a CA.
type ClientCert struct {
	TLS             tls.Certificate
	Leaf            *x509.Certificate
	CertPEM, KeyPEM []byte
}

// Client issues a client certificate (ExtKeyUsageClientAuth).
func (ca *CA) Client(tb testing.TB, o ClientOptions) ClientCert {
	tb.Helper()
	if o.NotAfter.IsZero() {
		o.NotAfter = time.Now().Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(tb),
		Subject:      pkix.Name{CommonName: o.CommonName, OrganizationalUnit: o.OrgUnits},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     o.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		DNSNames:     o.DNSNames,
	}
	for _, s := range o.URIs {
		u, err := url.Parse(s)
		if err != nil {
			tb.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, u)
	}
	var c ClientCert
	c.CertPEM, c.KeyPEM = ca.issue(tb, tmpl)
	var err error
	if c.TLS, err = tls.X509KeyPair(c.CertPEM, c.KeyPEM); err != nil {
		tb.Fatal(err)
	}
	c.Leaf = c.TLS.Leaf
	return c
}

// CRL returns a PEM CRL signed by the CA that revokes the given
// certificates.
func (ca *CA) CRL(tb testing.TB, revoked ...*x509.Certificate) []byte {
	tb.Helper()
	tmpl := &x509.RevocationList{
		Number:     serial(tb),
		ThisUpdate: time.Now().Add(-time.Minute),
		NextUpdate: time.Now().Add(24 * time.Hour),
	}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: time.Now()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		tb.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}
