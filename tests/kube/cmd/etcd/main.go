// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3 at the
// version that k8s.io/kubernetes itself requires (see go.mod), the same as
// etcd's own cmd (etcd/main.go in the etcd repository).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
