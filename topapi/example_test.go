package topapi_test

import (
	"context"
	"log"
	"net/http"

	"github.com/outrider-dev/outrider/topapi"
)

// A sampler shared by every request, behind a bearer token, on loopback.
func Example() {
	sampler, err := topapi.New(topapi.Config{}) // whole host, every 2s
	if err != nil {
		log.Fatal(err)
	}
	handler, err := topapi.NewHandler(topapi.HandlerConfig{
		Sampler:   sampler,
		TokenFile: "/run/secrets/top-token",
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	go sampler.Run(ctx)

	mux := http.NewServeMux()
	mux.Handle("GET /top", handler)
	mux.Handle("GET /top/", handler) // /top/openapi.json
	log.Fatal(http.ListenAndServe("127.0.0.1:9903", mux))
}
