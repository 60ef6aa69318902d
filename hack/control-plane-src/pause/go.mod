module kubewrit.local/hack/control-plane-src/pause

go 1.23.0
