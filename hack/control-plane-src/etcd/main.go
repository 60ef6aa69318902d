// Command etcd is the etcd server, built from the go.etcd.io/etcd/server/v3
// module at the version pinned in hack/versions.env (the same thin wrapper
// etcd's own repository uses for its binary).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
