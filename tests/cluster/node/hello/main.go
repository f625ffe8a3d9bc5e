// Command hello is the real node's test server. GET / answers with the pod's
// name and its process id, GET /ready is the readiness probe: it fails until
// the server has run for READY_AFTER (default 2s), so Ready is the probe's
// verdict and not the container's start.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	listen := envOr("LISTEN", ":8080")
	readyAfter, err := time.ParseDuration(envOr("READY_AFTER", "2s"))
	if err != nil {
		log.Fatalf("READY_AFTER: %v", err)
	}
	started := time.Now()
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s pid %d\n", host, os.Getpid())
	})
	mux.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) {
		if time.Since(started) < readyAfter {
			http.Error(w, "warming up", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
		<-sigs
		os.Exit(0)
	}()
	log.Printf("hello: listening on %s (pid %d)", listen, os.Getpid())
	log.Fatal(http.ListenAndServe(listen, mux))
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
