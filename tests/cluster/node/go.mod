// The real node's small images: the sandbox (pause) process and a test
// server, both static Go binaries with the standard library only.
module headroom.dev/cluster/node

go 1.22
