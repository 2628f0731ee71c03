package redistest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// StartCluster starts n redis-server nodes on free loopback ports and joins
// them into one Redis Cluster of n masters, the slots split evenly between
// them, and waits until every node reports it whole (cluster_state:ok). The
// nodes stop when the test ends. It skips or fails the test as Start does
// when redis-server is missing.
func StartCluster(tb testing.TB, n int) []*Server {
	tb.Helper()
	nodes := make([]*Server, n)
	for i := range nodes {
		nodes[i] = Start(tb, Options{Cluster: true})
	}
	ctx := context.Background()
	for i, node := range nodes {
		c := node.Client(tb)
		first, last := i*clusterSlots/n, (i+1)*clusterSlots/n-1
		if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", first, last).Err(); err != nil {
			tb.Fatalf("redistest: %s: CLUSTER ADDSLOTSRANGE: %v", node, err)
		}
		if i > 0 {
			if err := c.ClusterMeet(ctx, "127.0.0.1", strconv.Itoa(nodes[0].port)).Err(); err != nil {
				tb.Fatalf("redistest: %s: CLUSTER MEET: %v", node, err)
			}
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, node := range nodes {
		c := node.Client(tb)
		for {
			info, err := c.ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") &&
				strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(n)+"\r\n") {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("redistest: %s: the cluster did not form within 20 s: %v\n%s", node, err, info)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nodes
}

// AddClusterMaster starts a redis-server node and joins it to the cluster
// of nodes as a master without slots, as one added to take some of them
// over (it has cached no script either), and waits until every node knows
// every other. It stops when the test ends.
func AddClusterMaster(tb testing.TB, nodes []*Server) *Server {
	tb.Helper()
	ctx := context.Background()
	m := Start(tb, Options{Cluster: true})
	if err := m.Client(tb).ClusterMeet(ctx, "127.0.0.1", strconv.Itoa(nodes[0].port)).Err(); err != nil {
		tb.Fatalf("redistest: %s: CLUSTER MEET: %v", m, err)
	}
	known := "cluster_known_nodes:" + strconv.Itoa(len(nodes)+1) + "\r\n"
	deadline := time.Now().Add(20 * time.Second)
	for _, node := range append([]*Server{m}, nodes...) {
		for {
			info, err := node.Client(tb).ClusterInfo(ctx).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, known) {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("redistest: %s: did not learn of %s within 20 s: %v\n%s", node, m, err, info)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return m
}

// ClusterClient returns a client of the cluster of nodes, as cmd/server
// connects to one (RESP2), closed when the test ends.
func ClusterClient(tb testing.TB, nodes []*Server) *redis.ClusterClient {
	addrs := make([]string, len(nodes))
	for i, n := range nodes {
		addrs[i] = n.Addr
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs, Protocol: 2, MaxRetries: -1, ReadTimeout: slowReply})
	tb.Cleanup(func() { c.Close() })
	return c
}

// StartSentinel starts a redis-server master, replicas replicas of it
// (each synchronised with it before the next starts), and one Sentinel
// that monitors it as masterName (quorum 1, a master is down after 500 ms
// without answering), and waits until the Sentinel names the master and
// knows every replica. All stop when the test ends. It returns
// the master, the replicas and the Sentinel's address.
func StartSentinel(tb testing.TB, masterName string, replicas int) (master *Server, reps []*Server, sentinelAddr string) {
	tb.Helper()
	master = Start(tb, Options{})
	for range replicas {
		r := Start(tb, Options{})
		if err := r.Client(tb).ReplicaOf(context.Background(), "127.0.0.1", strconv.Itoa(master.port)).Err(); err != nil {
			tb.Fatalf("redistest: %s: REPLICAOF: %v", r, err)
		}
		awaitSync(tb, r, master)
		reps = append(reps, r)
	}
	port := freePort(tb)
	dir := tb.TempDir()
	conf := filepath.Join(dir, "sentinel.conf")
	text := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nlogfile %s\nsentinel monitor %s 127.0.0.1 %d 1\n"+
		"sentinel down-after-milliseconds %[4]s 500\nsentinel failover-timeout %[4]s 5000\n",
		port, dir, filepath.Join(dir, "sentinel.log"), masterName, master.port)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command("redis-server", conf, "--sentinel")
	if err := cmd.Start(); err != nil {
		tb.Fatalf("redistest: start redis-server --sentinel: %v", err)
	}
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	sentinelAddr = "127.0.0.1:" + strconv.Itoa(port)
	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinelAddr, MaxRetries: -1})
	defer sc.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		addr, err := sc.GetMasterAddrByName(ctx, masterName).Result()
		var known []map[string]string
		if err == nil {
			known, err = sc.Replicas(ctx, masterName).Result()
		}
		cancel()
		if err == nil && len(addr) == 2 && addr[1] == strconv.Itoa(master.port) && len(known) == replicas {
			return master, reps, sentinelAddr
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "sentinel.log"))
			tb.Fatalf("redistest: the Sentinel on %s did not name %s and its %d replicas within 10 s: %v %v\n%s", sentinelAddr, masterName, replicas, addr, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// AddClusterReplica starts a redis-server node, joins it to the cluster of
// nodes as a replica of master, and waits until it has synchronised with
// it. It stops when the test ends.
func AddClusterReplica(tb testing.TB, nodes []*Server, master *Server) *Server {
	tb.Helper()
	ctx := context.Background()
	r := Start(tb, Options{Cluster: true})
	rc := r.Client(tb)
	if err := rc.ClusterMeet(ctx, "127.0.0.1", strconv.Itoa(nodes[0].port)).Err(); err != nil {
		tb.Fatalf("redistest: %s: CLUSTER MEET: %v", r, err)
	}
	id, err := master.Client(tb).Do(ctx, "CLUSTER", "MYID").Text()
	if err != nil {
		tb.Fatalf("redistest: %s: CLUSTER MYID: %v", master, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		// The new node must know the master before it can replicate it.
		err = rc.Do(ctx, "CLUSTER", "REPLICATE", id).Err()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("redistest: %s: CLUSTER REPLICATE %s: %v", r, id, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	awaitSync(tb, r, master)
	return r
}

// awaitSync waits up to 20 s until replica has synchronised with master.
func awaitSync(tb testing.TB, replica, master *Server) {
	tb.Helper()
	rc := replica.Client(tb)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		info, err := rc.Info(context.Background(), "replication").Result()
		if err == nil && strings.Contains(info, "master_link_status:up") {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("redistest: %s: did not sync with %s within 20 s: %v\n%s", replica, master, err, info)
		}
	}
}
