package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// /drain takes the pod out of service for good: a peer on the pod network
// (the admin listener serves the kubelet's probes there) must not be able
// to call it.
func TestDrainOnlyFromLoopback(t *testing.T) {
	d := newDrainer()
	for _, remote := range []string{"10.1.2.3:40000", "[2001:db8::1]:40000", "garbage"} {
		req := httptest.NewRequest(http.MethodPost, "/drain", nil)
		req.RemoteAddr = remote
		rec := httptest.NewRecorder()
		d.ServeHTTP(rec, req)
		if rec.Code != http.StatusForbidden {
			t.Errorf("/drain from %s = %d, want 403", remote, rec.Code)
		}
	}
	select {
	case <-d.req:
		t.Error("a refused /drain was queued")
	default:
	}
}
