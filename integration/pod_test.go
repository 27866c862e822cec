package integration

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outrider-dev/outrider/internal/testcert"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// pod is a network namespace joined to the host by a veth pair that only
// this test created, addressed from a private /30 on both ends: the host
// end is hostIP, the pod end podIP. Nothing else is routed.
type pod struct {
	ns, hostIP, podIP string
}

// ipCmd runs `ip args…`, failing the test on error.
func ipCmd(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newPod creates the namespace and veth pair, removed in t.Cleanup (after
// the processes inside have been stopped: register it before starting
// them). Addresses come from 198.18.0.0/15, the range RFC 2544 sets aside
// for benchmarking, in a random /30.
func newPod(t *testing.T) *pod {
	t.Helper()
	needRoot(t)
	needTool(t, "ip")
	id := fmt.Sprintf("%d%04x", os.Getpid()%1000, rand.IntN(1<<16))
	ns := "outrider-pod-" + id
	hostIf, podIf := "orh"+id, "orp"+id // ≤ 15 bytes
	n := rand.IntN(1 << 14)             // /30 number within 198.18.0.0/16
	p := &pod{
		ns:     ns,
		hostIP: fmt.Sprintf("198.18.%d.%d", n>>6, (n&63)<<2+1),
		podIP:  fmt.Sprintf("198.18.%d.%d", n>>6, (n&63)<<2+2),
	}
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		if inCI() {
			t.Fatalf("ip netns add: %v\n%s", err, out)
		}
		t.Skipf("cannot create a network namespace here: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		exec.Command("ip", "link", "del", hostIf).Run() // gone already when the namespace took its peer down
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", ns, err, out)
		}
	})
	ipCmd(t, "link", "add", hostIf, "type", "veth", "peer", "name", podIf)
	ipCmd(t, "link", "set", podIf, "netns", ns)
	ipCmd(t, "addr", "add", p.hostIP+"/30", "dev", hostIf)
	ipCmd(t, "link", "set", hostIf, "up")
	ipCmd(t, "-n", ns, "addr", "add", p.podIP+"/30", "dev", podIf)
	ipCmd(t, "-n", ns, "link", "set", podIf, "up")
	ipCmd(t, "-n", ns, "link", "set", "lo", "up")
	return p
}

// start runs bin inside the pod's namespace.
func (p *pod) start(t *testing.T, name, bin string, args ...string) *proc {
	t.Helper()
	return start(t, procSpec{name: name, bin: "ip", args: append([]string{"netns", "exec", p.ns, bin}, args...)})
}

// exec runs a command inside the pod and returns its stdout.
func (p *pod) exec(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.CommandContext(t.Context(), "ip", append([]string{"netns", "exec", p.ns}, args...)...).Output()
	if err != nil {
		t.Fatalf("in the pod, %s: %v", strings.Join(args, " "), err)
	}
	return string(out)
}

// forward serves connections on the host end of the veth by relaying them
// to target (the test's config API on loopback), so that the pod reaches
// the API at hostIP and nothing else.
func (p *pod) forward(t *testing.T, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(p.hostIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				defer up.Close()
				go io.Copy(up, c)
				io.Copy(c, up)
			}()
		}
	}()
	return ln.Addr().String()
}

// TestPodSidecarStory runs the sidecar pattern in a real pod: the legacy app
// on the pod's 127.0.0.1:8080, outrider proxy on its :443 and :80, outrider
// configsync writing the app's config from an API on the host, and outrider
// top. From the host, only HTTPS and the HTTP redirect answer; the app and
// every admin port are out of reach. Then the seed story: a request over
// HTTPS, a new config that the app answers with, a broken config rolled
// back, and /top read through the proxy with a token. HTTP/3 answers from
// the host on UDP 443, and no other UDP port is open to it.
func TestPodSidecarStory(t *testing.T) {
	skipShort(t)
	p := newPod(t)
	curl := needTool(t, "curl")

	dir := t.TempDir()
	cfgDir, stateDir := filepath.Join(dir, "shared"), filepath.Join(dir, "state")
	ca := testcert.NewCA(t)
	certFile, keyFile := ca.LeafFiles(t, dir, "app.example")
	tokenFile := filepath.Join(dir, "top-token")
	const token = "pod-top-token-0123456789"
	os.WriteFile(tokenFile, []byte(token+"\n"), 0o600)

	api := newConfigAPI(t)
	api.publish("v1", map[string]string{"app.conf": "greeting=hello-v1\nhealthy=true\n"})
	apiAddr := p.forward(t, strings.TrimPrefix(strings.TrimSuffix(api.url, "/v1/config/app"), "http://"))

	p.start(t, "pod testapp", bins.testapp, "--listen", "127.0.0.1:8080", "--config-dir", cfgDir, "--pidfile", filepath.Join(dir, "app.pid"))
	p.start(t, "pod configsync", bins.outrider, "configsync", "--log-format=json",
		"--source", "http://"+apiAddr+"/v1/config/app", "--dir", cfgDir, "--state-dir", stateDir,
		"--interval", "100ms", "--debounce", "10ms", "--admin-listen", "127.0.0.1:9902",
		"--notify", "http:POST:http://127.0.0.1:8080/-/reload",
		"--health-url", "http://127.0.0.1:8080/healthz", "--health-timeout", "2s")
	p.start(t, "pod proxy", bins.outrider, "proxy", "--log-format=json",
		"--listen", "0.0.0.0:443", "--http-listen", "0.0.0.0:80", "--admin-listen", "127.0.0.1:9901",
		"--upstream", "http://127.0.0.1:8080", "--cert", certFile, "--key", keyFile,
		"--top", "--top-token-file", tokenFile, "--top-public")
	p.start(t, "pod top", bins.outrider, "top", "--log-format=json", "--listen", "127.0.0.1:9903", "--token-file", tokenFile)

	https := net.JoinHostPort(p.podIP, "443")
	c := clientFor(https, ca.Pool(), true)
	greeting := func() (int, string) {
		resp, err := c.Get("https://app.example/")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitGreeting := func(want string) {
		t.Helper()
		waitFor(t, 20*time.Second, func() error {
			if code, body := greeting(); code != 200 || !strings.HasPrefix(body, want+" from the legacy app") {
				return fmt.Errorf("GET / = %d %q, want %q", code, body, want)
			}
			return nil
		})
	}

	t.Run("only HTTPS and the redirect are reachable", func(t *testing.T) {
		waitGreeting("hello-v1")
		code, body := greeting()
		if !strings.Contains(body, `X-Forwarded-Proto="https"`) {
			t.Errorf("GET / = %d %q: the app did not see HTTPS", code, body)
		}
		req, _ := http.NewRequest(http.MethodGet, "http://"+net.JoinHostPort(p.podIP, "80")+"/a?b=c", nil)
		req.Host = "app.example"
		resp, err := (&http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusPermanentRedirect || resp.Header.Get("Location") != "https://app.example/a?b=c" {
			t.Errorf("http:// = %d %q, want 308 to https://app.example/a?b=c", resp.StatusCode, resp.Header.Get("Location"))
		}
		for _, port := range []string{"8080", "9901", "9902", "9903"} {
			if conn, err := net.DialTimeout("tcp", net.JoinHostPort(p.podIP, port), 2*time.Second); err == nil {
				conn.Close()
				t.Errorf("port %s of the pod is reachable from outside", port)
			}
		}
		// The same ports answer inside the pod, on loopback: they exist.
		for _, url := range []string{"http://127.0.0.1:8080/healthz", "http://127.0.0.1:9901/healthz", "http://127.0.0.1:9902/healthz", "http://127.0.0.1:9903/healthz"} {
			if out := p.exec(t, curl, "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", url); out != "200" {
				t.Errorf("inside the pod, %s = %s, want 200", url, out)
			}
		}
	})

	t.Run("HTTP/3 on UDP 443 and no other UDP port", func(t *testing.T) {
		h3 := &http3.Transport{
			TLSClientConfig: &tls.Config{RootCAs: ca.Pool()},
			Dial: func(ctx context.Context, _ string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
				return quic.DialAddr(ctx, net.JoinHostPort(p.podIP, "443"), tlsCfg, cfg)
			},
		}
		defer h3.Close()
		resp, err := (&http.Client{Transport: h3, Timeout: 10 * time.Second}).Get("https://app.example/")
		if err != nil {
			t.Fatalf("HTTP/3 from outside the pod: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Proto != "HTTP/3.0" || !strings.Contains(string(body), `X-Forwarded-Proto="https"`) {
			t.Errorf("HTTP/3 GET / = %d %s %q", resp.StatusCode, resp.Proto, body)
		}
		if _, _, hdr := get(t, c, "https://app.example/"); hdr.Get("Alt-Svc") != `h3=":443"; ma=86400` {
			t.Errorf("Alt-Svc over HTTP/2 = %q", hdr.Get("Alt-Svc"))
		}
		// Every UDP socket in the pod but HTTP/3's is bound to loopback.
		ss := needTool(t, "ss")
		quic443 := false
		for _, l := range strings.Split(strings.TrimSpace(p.exec(t, ss, "-Hlun")), "\n") {
			f := strings.Fields(l)
			if len(f) < 4 {
				continue
			}
			local := f[3]
			host, port, _ := net.SplitHostPort(local)
			if ip := net.ParseIP(strings.Trim(host, "[]")); ip != nil && ip.IsLoopback() {
				continue
			}
			if port != "443" {
				t.Errorf("UDP %s is open to the outside of the pod", local)
			}
			quic443 = true
		}
		if !quic443 {
			t.Error("ss lists no UDP socket on port 443 in the pod")
		}
	})

	t.Run("new config reaches the app", func(t *testing.T) {
		api.publish("v2", map[string]string{"app.conf": "greeting=hello-v2\nhealthy=true\n"})
		waitGreeting("hello-v2")
	})

	t.Run("broken config is rolled back", func(t *testing.T) {
		api.publish("v3", map[string]string{"app.conf": "greeting=broken\nhealthy=false\n"})
		var st csStatus
		waitFor(t, 20*time.Second, func() error {
			out := p.exec(t, curl, "-s", "--max-time", "5", "http://127.0.0.1:9902/status")
			var s struct {
				Configsync csStatus `json:"configsync"`
			}
			if err := json.Unmarshal([]byte(out), &s); err != nil {
				return fmt.Errorf("configsync /status: %v: %q", err, out)
			}
			if st = s.Configsync; st.LastResult != "rolled_back" {
				return fmt.Errorf("configsync status %+v", st)
			}
			return nil
		})
		if st.AppliedVersion != "v2" || st.RejectedVersion != "v3" {
			t.Errorf("after rollback: %+v, want v2 applied and v3 rejected", st)
		}
		waitGreeting("hello-v2")
		if code, _, _ := get(t, c, "https://app.example/healthz"); code != 200 {
			t.Errorf("app /healthz through the proxy = %d after rollback", code)
		}
	})

	t.Run("top through the proxy with a token", func(t *testing.T) {
		if code, _, _ := get(t, c, "https://app.example/top"); code != http.StatusUnauthorized {
			t.Errorf("/top without a token = %d, want 401", code)
		}
		var top struct {
			Host      map[string]any `json:"host"`
			Processes []struct {
				PID     int      `json:"pid"`
				Name    string   `json:"name"`
				Cmdline []string `json:"cmdline"`
			} `json:"processes"`
		}
		if code := getJSON(t, c, "https://app.example/top?sort=pid", &top, "Authorization", "Bearer "+token); code != 200 {
			t.Fatalf("/top with the token = %d", code)
		}
		var app bool
		for _, pr := range top.Processes {
			if pr.Name == "testapp" {
				app = true
			}
		}
		if len(top.Host) == 0 || !app {
			t.Errorf("/top: host %v, %d processes, testapp listed %v", top.Host, len(top.Processes), app)
		}
	})
}
