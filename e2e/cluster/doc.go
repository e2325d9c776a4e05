// Package cluster is the end-to-end test harness of nodexds: a real
// Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager
// running only the EndpointSlice controllers) and simulated nodes made of
// Linux network namespaces, with pods played by plain processes.
//
// Nothing is faked at the API level: Services, Pods and Nodes are real API
// objects, and EndpointSlices are written by the real controller from the
// Pod status the harness reports in place of a kubelet. What is simulated is
// only what a kubelet and a CNI plugin would do: giving a pod an IP on its
// node, running its process, and writing its status.
//
// Network layout (one private 10.X.0.0/16 per run, chosen to avoid every
// address and route on the host): a bridge in the root namespace holds
// 10.X.0.1, where the API server listens; each node is a network namespace
// joined to the bridge by a veth pair, its eth0 holding the node IP
// 10.X.0.(10+i) and, as /32s, the IPs of its pods from 10.X.(1+i).0/24. All
// addresses are on one L2 segment, so no routes are needed. Processes run
// with `ip netns exec` in a fresh UTS namespace whose hostname is the node
// name (RunInNode, StartInNode) or the pod name (StartPod).
//
// Usage:
//
//	c := cluster.Start(t, cluster.Options{
//		Nodes:      []cluster.Node{{Name: "n1", Zone: "z1", Region: "r1"}},
//		Namespaces: []string{"demo"},
//	})
//	p := c.StartPod(t, cluster.PodSpec{Namespace: "demo", Name: "web-1", Node: "n1",
//		Labels: map[string]string{"app": "web"},
//		Ports:  []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
//		Argv:   []string{"python3", "-m", "http.server", "--bind", "{{IP}}", "8080"}})
//	c.DeletePod(t, p)         // Terminating: the endpoint turns terminating
//	c.FinishPodDeletion(t, p) // what the kubelet does once the process is gone
//
// Requirements: root (namespaces, veths, a bridge) — otherwise Start skips
// the test with a message saying so — and the control-plane binaries and
// kubectl, which e2e/build-bins.sh compiles from the Go module proxy into
// ~/.cache/nodexds/bin/<versions>/ (Start runs it when they are missing;
// about 6-15 minutes cold on 2 cores, so run it beforehand or use
// go test -timeout 30m). $NODEXDS_BIN_DIR points at prebuilt binaries
// instead; $NODEXDS_E2E_LOGDIR keeps component logs after the test.
//
// StopAPIServer and StartAPIServer play a control-plane outage: the API
// server comes back with the same flags, address, certificates and etcd
// data. Kubectl runs the kubectl built with the control plane (same
// version) as the harness's admin.
//
// Apply and Delete take YAML manifests of any kind the API server serves
// (server-side apply, through discovery), custom resources included.
// InstallGatewayAPI applies the Gateway API's standard-channel CRDs that
// nodexds reads (GRPCRoute, HTTPRoute, ReferenceGrant) from the module
// version e2e/go.mod requires, and waits until they are Established; it can
// run at any time, e.g. after the agents started.
//
// Every Start*, *Pod and *InNode call registers its teardown with t.Cleanup:
// processes are stopped by process group (and carry PR_SET_PDEATHSIG, so
// they die with a test binary killed before its cleanups run), pods are
// force-deleted, namespaces, veths and the bridge are removed. A later run
// removes the network of a run whose process has died (see sweepStale).
//
// The ServiceAccount admission plugin stays enabled; since no
// ServiceAccount controller runs, CreateNamespace also creates each
// namespace's "default" ServiceAccount. Namespaces are never deleted (no
// namespace controller would finish the deletion).
package cluster
