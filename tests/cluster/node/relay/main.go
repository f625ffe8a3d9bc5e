// Command relay forwards TCP from an address pods can reach (the node's
// bridge address) to a service that listens on the host's loopback only
// (the API server), so pods reach it without the service listening wider.
//
//	relay LISTEN=TARGET [LISTEN=TARGET ...]
package main

import (
	"io"
	"log"
	"net"
	"os"
	"strings"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: relay LISTEN=TARGET [LISTEN=TARGET ...]")
	}
	for _, pair := range os.Args[1:] {
		listen, target, ok := strings.Cut(pair, "=")
		if !ok {
			log.Fatalf("%q: want LISTEN=TARGET", pair)
		}
		l, err := net.Listen("tcp", listen)
		if err != nil {
			log.Fatal(err)
		}
		log.Printf("relay: %s -> %s", listen, target)
		go serve(l, target)
	}
	select {}
}

func serve(l net.Listener, target string) {
	for {
		c, err := l.Accept()
		if err != nil {
			log.Fatal(err)
		}
		go func() {
			defer c.Close()
			t, err := net.Dial("tcp", target)
			if err != nil {
				log.Printf("relay: %s: %v", target, err)
				return
			}
			defer t.Close()
			done := make(chan struct{}, 2)
			pipe := func(dst, src net.Conn) {
				io.Copy(dst, src)
				if tc, ok := dst.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
				done <- struct{}{}
			}
			go pipe(t, c)
			go pipe(c, t)
			<-done
			<-done
		}()
	}
}
