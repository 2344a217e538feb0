// Command etcd is the upstream etcd server (go.etcd.io/etcd/server/v3), built at the version the
// Kubernetes release in ../../go.mod depends on, for spillway's tests
// (see scripts/services/kube-apiserver.sh). Same entry point as etcd's own server/main.go.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
