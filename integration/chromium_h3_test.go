package integration

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// TestChromiumOverHTTP3 opens the app's page in headless Chromium forced
// onto QUIC for outrider's origin: the page loads, the browser reports h3
// as its protocol, the app saw it as HTTPS, and a WebSocket from the page
// echoes (over HTTP/1.1: Chromium opens WebSockets over HTTP/3 only behind
// a flag).
func TestChromiumOverHTTP3(t *testing.T) {
	skipShort(t)
	chromium := needTool(t, "chromium")
	e := startProxy(t)
	_, port, _ := net.SplitHostPort(e.h3Addr(t))
	origin := "app.example:" + port
	page := devtoolsPage(t, chromium, "https://"+origin+"/",
		"--origin-to-force-quic-on="+origin,
		"--host-resolver-rules=MAP app.example 127.0.0.1",
		// Trust the test leaf by its key, for QUIC as for TCP.
		"--ignore-certificate-errors-spki-list="+spkiHash(t, e.certFile),
	)
	waitFor(t, 20*time.Second, func() error {
		proto := page.eval(t, `(performance.getEntriesByType("navigation")[0] || {}).nextHopProtocol || ""`)
		body := page.eval(t, `document.body ? document.body.innerText : ""`)
		if proto != "h3" || !strings.Contains(body, "from the legacy app") {
			return fmt.Errorf("page over %q: %.80q", proto, body)
		}
		if !strings.Contains(body, `X-Forwarded-Proto="https"`) {
			return fmt.Errorf("the app did not see HTTPS: %q", body)
		}
		return nil
	})
	chromiumWebSocket(t, page, origin)
	e.px.waitLog(10*time.Second, `"proto":"HTTP/3.0"`)
}

// TestChromiumWebSocketOverHTTP2 loads the page over HTTP/2 (QUIC off), so
// that Chromium, seeing SETTINGS_ENABLE_CONNECT_PROTOCOL, opens its
// WebSocket on the same connection with extended CONNECT (RFC 8441).
func TestChromiumWebSocketOverHTTP2(t *testing.T) {
	skipShort(t)
	chromium := needTool(t, "chromium")
	e := startProxy(t)
	_, port, _ := net.SplitHostPort(e.https)
	origin := "app.example:" + port
	page := devtoolsPage(t, chromium, "https://"+origin+"/",
		"--disable-quic",
		"--host-resolver-rules=MAP app.example 127.0.0.1",
		"--ignore-certificate-errors-spki-list="+spkiHash(t, e.certFile),
	)
	waitFor(t, 20*time.Second, func() error {
		if proto := page.eval(t, `(performance.getEntriesByType("navigation")[0] || {}).nextHopProtocol || ""`); proto != "h2" {
			return fmt.Errorf("page over %q", proto)
		}
		return nil
	})
	chromiumWebSocket(t, page, origin)
	line := e.px.waitLog(10*time.Second, `"path":"/ws"`)
	if !strings.Contains(line, `"method":"CONNECT"`) || !strings.Contains(line, `"proto":"HTTP/2.0"`) || !strings.Contains(line, `"status":200`) {
		t.Errorf("the WebSocket did not go over HTTP/2 extended CONNECT: %s", line)
	}
}

// chromiumWebSocket opens a WebSocket to origin's /ws from the page and
// waits for its echo.
func chromiumWebSocket(t *testing.T, page *devtools, origin string) {
	t.Helper()
	page.eval(t, `window.wsResult = "", (() => {
		const ws = new WebSocket("wss://`+origin+`/ws");
		ws.onopen = () => ws.send("hello from chromium");
		ws.onmessage = ev => { window.wsResult = ev.data; ws.close(); };
		ws.onerror = () => { window.wsResult = "error"; };
	})(), ""`)
	waitFor(t, 20*time.Second, func() error {
		if r := page.eval(t, `window.wsResult`); r != "echo: hello from chromium" {
			return fmt.Errorf("WebSocket from the page: %q", r)
		}
		return nil
	})
}

// spkiHash is the base64 SHA-256 of the certificate's public key, as
// Chromium's --ignore-certificate-errors-spki-list wants it.
func spkiHash(t *testing.T, certFile string) string {
	t.Helper()
	b, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM block", certFile)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}
