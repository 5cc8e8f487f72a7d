# Network scenarios, sourced by tests/e2e/in-vm with $RUNTIME (runvm or runc), $IMAGE (a
# busybox image) and a running dockerd with its default bridge and iptables. Every scenario
# asks for runc's behaviour: the container's eth0 as docker set it up (MAC, address, route,
# MTU), published ports, containers of both runtimes on one bridge reaching each other both
# ways, IPv6, names on a user-defined network, connect and disconnect while running, bulk
# data with its sha256 intact in both directions, and `--network host`.

# Bytes moved each way by the bulk scenario (the issue's 1 GiB by hand: NET_BULK_MIB=1024).
: "${NET_BULK_MIB:=16}"

# web NAME RUNTIME [ARGS...]: a busybox web server on port 80 serving "hi from NAME".
web() {
    local n=$1 rt=$2; shift 2
    docker run -d --name "$n" --runtime "$rt" "$@" "$IMAGE" sh -c \
        "mkdir -p /w && echo 'hi from $n' >/w/index.html && exec httpd -f -p 80 -h /w" >/dev/null
}

# In a container: `sh -c "$GET ADDRESS"` prints the body of http://ADDRESS/ (one line). The
# image's static busybox wget crashes resolving (static glibc without NSS): nc instead.
GET='get() { printf "GET / HTTP/1.0\r\n\r\n" | nc -w 10 "$1" 80 | tail -n 1; }; get'

# subnet_index: a number per runtime, so each runtime's networks have subnets of their own.
subnet_index() {
    case $RUNTIME in runvm) echo 1 ;; *) echo 2 ;; esac
}

# ip_of NAME [NETWORK]: the container's IPv4 address (on NETWORK, default bridge).
ip_of() {
    docker inspect -f "{{(index .NetworkSettings.Networks \"${2:-bridge}\").IPAddress}}" "$1"
}

# fetch URL: what wget gets there, retried for up to 30 s (a server may still be starting).
fetch() {
    local i out
    for i in $(seq 1 60); do
        out=$(wget -qO- -T 5 "$1" 2>/dev/null) && { echo "$out"; return 0; }
        sleep 0.5
    done
    echo "fetch: nothing from $1" >&2
    return 1
}

net_bridge_config() {
    local c; c=$(name netcfg)
    docker run -d --name "$c" --runtime "$RUNTIME" "$IMAGE" sleep 1000 >/dev/null
    local ip gw mac
    ip=$(ip_of "$c")
    gw=$(docker inspect -f '{{.NetworkSettings.Gateway}}' "$c")
    mac=$(docker inspect -f '{{.NetworkSettings.MacAddress}}' "$c")
    [ -n "$ip" ] && [ -n "$gw" ] && [ -n "$mac" ]
    expect "$(docker exec "$c" cat /sys/class/net/eth0/address)" "$mac"
    expect "$(docker exec "$c" cat /sys/class/net/eth0/mtu)" 1500
    expect_in "$(docker exec "$c" ip -o -4 addr show dev eth0)" "inet $ip/16"
    expect_in "$(docker exec "$c" ip route show default)" "default via $gw dev eth0"
    # The address stays on the namespace's interface, where docker put it.
    local pid; pid=$(docker inspect -f '{{.State.Pid}}' "$c")
    expect_in "$(nsenter -t "$pid" -n ip -o -4 addr show dev eth0)" "inet $ip/16"
    # The gateway answers (ICMP through the bridge).
    docker exec "$c" ping -c 1 -W 5 "$gw" >/dev/null
    docker rm -f "$c" >/dev/null
}

net_published_port() {
    local c; c=$(name web-pub)
    web "$c" "$RUNTIME" -p 127.0.0.1::80
    local port; port=$(docker port "$c" 80/tcp | head -n1 | sed 's/.*://')
    [ -n "$port" ]
    expect "$(fetch "http://127.0.0.1:$port/")" "hi from $c"
    expect "$(fetch "http://$(ip_of "$c")/")" "hi from $c"
    docker rm -f "$c" >/dev/null
}

net_cross_runtime() {
    # A runc server and a server under the runtime on the default bridge; each runtime's
    # client fetches from the other's.
    local a b; a=$(name web-a) b=$(name web-b)
    web "$a" runc
    web "$b" "$RUNTIME"
    local ipa ipb; ipa=$(ip_of "$a") ipb=$(ip_of "$b")
    expect "$(docker run --rm --runtime "$RUNTIME" "$IMAGE" sh -c "$GET $ipa")" "hi from $a"
    fetch "http://$ipb/" >/dev/null
    expect "$(docker run --rm --runtime runc "$IMAGE" sh -c "$GET $ipb")" "hi from $b"
    docker rm -f "$a" "$b" >/dev/null
}

net_user_defined() {
    # A user-defined network with an MTU of 1400 and IPv6: names resolve through docker's
    # resolver, the MTU and both address families reach the container.
    local net; net=$(name net-ud)
    local k; k=$(subnet_index)
    docker network create --ipv6 --subnet "172.30.$k.0/24" --subnet "fd00:e2e:$k::/64" \
        -o com.docker.network.driver.mtu=1400 "$net" >/dev/null
    local s c; s=$(name ud-web) c=$(name ud-client)
    web "$s" runc --network "$net"
    docker run -d --name "$c" --runtime "$RUNTIME" --network "$net" "$IMAGE" sleep 1000 >/dev/null
    expect "$(docker exec "$c" cat /sys/class/net/eth0/mtu)" 1400
    local v6; v6=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").GlobalIPv6Address}}" "$c")
    [ -n "$v6" ]
    expect_in "$(docker exec "$c" ip -o -6 addr show dev eth0)" "inet6 $v6/64"
    local sv6; sv6=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").GlobalIPv6Address}}" "$s")
    fetch "http://$(ip_of "$s" "$net")/" >/dev/null
    expect "$(docker exec "$c" sh -c "$GET $sv6")" "hi from $s"
    # The name, through docker's resolver at 127.0.0.11 (busybox's own DNS client).
    expect_in "$(docker exec "$c" nslookup "$s")" "$(ip_of "$s" "$net")"
    docker rm -f "$s" "$c" >/dev/null
    docker network rm "$net" >/dev/null
}

net_connect_disconnect() {
    # docker network connect/disconnect on a running container: a NIC comes and goes.
    local net c; net=$(name net-cd) c=$(name netcd)
    docker network create --subnet "172.31.$(subnet_index).0/24" "$net" >/dev/null
    docker run -d --name "$c" --runtime "$RUNTIME" "$IMAGE" sleep 1000 >/dev/null
    docker network connect "$net" "$c"
    local ip; ip=$(ip_of "$c" "$net")
    [ -n "$ip" ]
    wait_until 30 docker exec "$c" sh -c "ip -o -4 addr | grep -q 'inet $ip/24'"
    local s; s=$(name cd-web)
    web "$s" runc --network "$net"
    expect "$(docker exec "$c" sh -c "$GET $(ip_of "$s" "$net")")" "hi from $s"
    docker network disconnect "$net" "$c"
    wait_until 30 docker exec "$c" sh -c "! ip -o -4 addr | grep -q 'inet $ip/24'"
    # The first network still works.
    docker exec "$c" ping -c 1 -W 5 "$(docker inspect -f '{{.NetworkSettings.Gateway}}' "$c")" >/dev/null
    docker rm -f "$c" "$s" >/dev/null
    docker network rm "$net" >/dev/null
}

# tcp_bulk send FILE IP PORT / tcp_bulk sha256 SIZE IP PORT: the host's end of a bulk
# transfer (python3, retried until the container's listener is up): sends FILE then closes
# its side and waits for the peer's close, or prints the sha256 of the first SIZE bytes
# received (busybox nc does not close its side at the end of its input).
tcp_bulk() {
    python3 - "$@" <<'PY'
import hashlib, socket, sys, time
mode, arg, host, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
for _ in range(120):
    try:
        s = socket.create_connection((host, port), timeout=10)
        break
    except OSError:
        time.sleep(0.5)
else:
    sys.exit(f"cannot connect to {host}:{port}")
s.settimeout(120)
if mode == "send":
    with open(arg, "rb") as f:
        while chunk := f.read(1 << 20):
            s.sendall(chunk)
    s.shutdown(socket.SHUT_WR)
    s.recv(1)
else:
    size, got, h = int(arg), 0, hashlib.sha256()
    while got < size and (data := s.recv(min(1 << 20, size - got))):
        h.update(data)
        got += len(data)
    print(h.hexdigest())
PY
}

net_bulk() {
    # $NET_BULK_MIB MiB each way over TCP between the host and the container; sha256 equal.
    local c; c=$(name bulk)
    # The data lands on a tmpfs (this measures the network, not the file system).
    docker run -d --name "$c" --runtime "$RUNTIME" -m "$((NET_BULK_MIB * 2 + 256))m" \
        --tmpfs "/bulk:size=$((NET_BULK_MIB + 8))m" "$IMAGE" sleep 1000 >/dev/null
    local ip; ip=$(ip_of "$c")
    head -c "$((NET_BULK_MIB << 20))" /dev/urandom >"$W/bulk.in"
    local want; want=$(sha256sum <"$W/bulk.in" | cut -d' ' -f1)
    # Host -> container: nc in the container writes what it receives to a file.
    docker exec -d "$c" sh -c 'nc -l -p 5001 >/bulk/in'
    tcp_bulk send "$W/bulk.in" "$ip" 5001
    # tcp_bulk returned once the container's nc closed: the file is whole.
    expect "$(docker exec "$c" sh -c 'sha256sum </bulk/in' | cut -d' ' -f1)" "$want"
    # Container -> host.
    docker exec -d "$c" sh -c 'nc -l -p 5002 </bulk/in'
    expect "$(tcp_bulk sha256 "$((NET_BULK_MIB << 20))" "$ip" 5002)" "$want"
    rm -f "$W/bulk.in"
    docker rm -f "$c" >/dev/null
}

# The far end of the host's uplink for `--network host`: a namespace of its own,
# 198.51.100.2 (a router) and 198.51.100.3 (a server) on a veth whose host end has
# 198.51.100.1. Made once per run; where the host has no default route (L1), one via the
# router (passt needs a way out), as a user's machine has. (passt maps the default gateway's
# address to the host itself, so the server is not the router.)
NET_UPLINK_NS=e2e-uplink
uplink() {
    ip netns list | grep -qw "$NET_UPLINK_NS" && return 0
    ip netns add "$NET_UPLINK_NS"
    ip link add e2e-up type veth peer name e2e-down netns "$NET_UPLINK_NS"
    ip addr add 198.51.100.1/24 dev e2e-up
    ip link set e2e-up up
    ip -n "$NET_UPLINK_NS" addr add 198.51.100.2/24 dev e2e-down
    ip -n "$NET_UPLINK_NS" addr add 198.51.100.3/24 dev e2e-down
    ip -n "$NET_UPLINK_NS" link set e2e-down up
    ip -n "$NET_UPLINK_NS" link set lo up
    [ -n "$(ip route show default)" ] || ip route add default via 198.51.100.2
}

# Live passt processes (not zombies).
# (Debian's passt runs its AVX2 build where it can: passt.avx2.)
passts() { ps -eo stat=,comm= | awk '($2 == "passt" || $2 == "passt.avx2") && $1 !~ /^Z/' | wc -l; }

net_host() {
    # --network host: a connection out leaves from the host's address; bulk data both ways
    # through passt; a port the container listens on is the host's, on 127.0.0.1 and on the
    # uplink, and free again after rm.
    uplink
    rm -f "$W"/hostnet.*
    local before; before=$(passts)
    local port=$((18180 + $(subnet_index)))
    # The network's end: one connection, its peer's address written down.
    ip netns exec "$NET_UPLINK_NS" python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.51.100.3", 9000)); s.listen(1); s.settimeout(120)
open(sys.argv[1] + ".ready", "w").close()
c, peer = s.accept(); line = c.makefile().readline().strip()
open(sys.argv[1], "w").write(peer[0] + " " + line + "\n")' "$W/hostnet.peer" &
    local server=$!
    wait_until 20 test -e "$W/hostnet.peer.ready"
    docker run --rm --network host --runtime "$RUNTIME" "$IMAGE" \
        sh -c 'echo out-from-the-container | nc 198.51.100.3 9000'
    wait "$server"
    expect "$(cat "$W/hostnet.peer")" "198.51.100.1 out-from-the-container"
    rm -f "$W/hostnet.peer" "$W/hostnet.peer.ready"
    # Bulk through passt both ways (frames up to its MTU of 65520): 4 MiB from a server of
    # the network into the container, then back; sha256 equal. The download keeps
    # nc's input open (a FIFO): Debian 12's passt stalls a download once the container has
    # shut its own side down (see README), which nc does at the end of an empty input.
    head -c "$((4 << 20))" /dev/urandom >"$W/hostnet.bin"
    local want; want=$(sha256sum <"$W/hostnet.bin" | cut -d' ' -f1)
    ip netns exec "$NET_UPLINK_NS" python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.51.100.3", 9002)); s.listen(1); s.settimeout(120)
open(sys.argv[1] + ".ready", "w").close()
c, _ = s.accept(); c.sendall(open(sys.argv[1], "rb").read()); c.close()' "$W/hostnet.bin" &
    server=$!
    wait_until 20 test -e "$W/hostnet.bin.ready"
    expect "$(docker run --rm --network host --runtime "$RUNTIME" "$IMAGE" \
        sh -c 'mkfifo /tmp/in && exec 3<>/tmp/in && nc 198.51.100.3 9002 <&3 | sha256sum' |
        cut -d' ' -f1)" "$want"
    wait "$server"
    ip netns exec "$NET_UPLINK_NS" python3 -c '
import hashlib, socket, sys
size = int(sys.argv[2])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.51.100.3", 9003)); s.listen(1); s.settimeout(120)
open(sys.argv[1] + ".ready2", "w").close()
c, _ = s.accept(); c.settimeout(120); h, got = hashlib.sha256(), 0
while got < size and (d := c.recv(1 << 20)):
    h.update(d); got += len(d)
open(sys.argv[1] + ".sum", "w").write(h.hexdigest())' "$W/hostnet.bin" "$((4 << 20))" &
    server=$!
    wait_until 20 test -e "$W/hostnet.bin.ready2"
    docker run --rm --network host --runtime "$RUNTIME" -v "$W/hostnet.bin:/data:ro" "$IMAGE" \
        sh -c 'nc 198.51.100.3 9003 </data'
    wait "$server"
    expect "$(cat "$W/hostnet.bin.sum")" "$want"
    rm -f "$W"/hostnet.bin*
    local c; c=$(name hostnet)
    docker run -d --name "$c" --network host --runtime "$RUNTIME" "$IMAGE" sh -c \
        "mkdir -p /w && echo 'hi from $c' >/w/index.html && exec httpd -f -p $port -h /w" >/dev/null
    local got
    got=$(fetch "http://127.0.0.1:$port/") || { ss -ltnp; docker logs "$c"; false; }
    expect "$got" "hi from $c"
    # docker names the host's own namespace in the spec: its interfaces stay the host's
    # (no tap, no redirect).
    [ -z "$(tc qdisc show dev e2e-up ingress)" ]
    [ -z "$(ip -o link show | grep rvtap)" ]
    expect "$(ip netns exec "$NET_UPLINK_NS" wget -qO- -T 5 "http://198.51.100.1:$port/")" "hi from $c"
    docker rm -f "$c" >/dev/null
    # The port is free again, and no passt is left.
    # (SO_REUSEADDR, as servers bind: the server's side of closed connections waits in
    # TIME_WAIT, under runc too.)
    wait_until 10 python3 -c "import socket; s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', $port))"
    wait_until 10 test "$(passts)" -le "$before"
}

net_scenarios() {
    scenario "net $RUNTIME: eth0 as docker set it (MAC, address, route, MTU)" net_bridge_config
    scenario "net $RUNTIME: a published port from the host" net_published_port
    scenario "net $RUNTIME: runc and $RUNTIME servers and clients on one bridge" net_cross_runtime
    scenario "net $RUNTIME: user-defined network: MTU 1400, IPv6, names" net_user_defined
    scenario "net $RUNTIME: network connect and disconnect while running" net_connect_disconnect
    scenario "net $RUNTIME: $NET_BULK_MIB MiB each way over TCP, sha256 equal" net_bulk
    scenario "net $RUNTIME: --network host: out from the host's address, listeners as host ports" net_host
}

# podman's default network (netavark's bridge) and a network of its own with aardvark-dns:
# addresses, a published port, names, runc and the runtime reaching each other.
podman_net() {
    local s c net port
    s=$(name pnet-web) c=$(name pnet-client) net=$(name pnet)
    port=$((18080 + $(subnet_index)))
    pman run -d --name "$s" -p "127.0.0.1:$port:80" "$IMAGE" sh -c \
        "mkdir -p /w && echo 'hi from $s' >/w/index.html && exec httpd -f -p 80 -h /w" >/dev/null
    local ip; ip=$(pman inspect -f '{{.NetworkSettings.IPAddress}}' "$s")
    [ -n "$ip" ]
    expect_in "$(pman exec "$s" ip -o -4 addr show dev eth0)" "inet $ip/"
    expect "$(fetch "http://$ip/")" "hi from $s"
    expect "$(fetch "http://127.0.0.1:$port/")" "hi from $s"
    expect "$(RUNTIME=runc pman run --rm "$IMAGE" sh -c "$GET $ip")" "hi from $s"
    # A network with aardvark-dns: the client under the runtime finds runc's server by name.
    pman network create --subnet "10.89.$(subnet_index).0/24" "$net" >/dev/null
    RUNTIME=runc pman run -d --name "$c-srv" --network "$net" "$IMAGE" sh -c \
        "mkdir -p /w && echo 'hi from runc' >/w/index.html && exec httpd -f -p 80 -h /w" >/dev/null
    local sip; sip=$(RUNTIME=runc pman inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" "$c-srv")
    expect_in "$(pman run --rm --network "$net" "$IMAGE" nslookup "$c-srv")" "$sip"
    expect "$(pman run --rm --network "$net" "$IMAGE" sh -c "$GET $sip")" "hi from runc"
    pman rm -f -t 0 "$s" "$c-srv" >/dev/null
    pman network rm "$net" >/dev/null
}

# ctr run --cni: containerd's CNI (a bridge conflist, Debian's plugins) wires the task's
# namespace between create and start, the other order from docker's. The firewall plugin
# lets the bridge's traffic through FORWARD, whose policy dockerd set to DROP.
setup_cni() {
    mkdir -p /etc/cni/net.d /opt/cni
    [ -e /opt/cni/bin ] || ln -s /usr/lib/cni /opt/cni/bin
    cat >/etc/cni/net.d/10-e2e.conflist <<'CONF'
{
  "cniVersion": "0.4.0",
  "name": "e2e-cni",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni-e2e", "isGateway": true, "ipMasq": true,
      "ipam": { "type": "host-local", "ranges": [[{ "subnet": "10.77.0.0/24" }]],
                "routes": [{ "dst": "0.0.0.0/0" }] }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } },
    { "type": "firewall" }
  ]
}
CONF
}

# ctr_ip ID: the task's eth0 address, as the container sees it.
ctr_ip() {
    cctr task exec --exec-id "ip-$RANDOM" "$1" ip -o -4 addr show dev eth0 |
        sed -n 's/.* inet \([0-9.]*\)\/.*/\1/p'
}

ctr_net() {
    setup_cni
    local s; s=$(name c-web)
    crun_ --cni -d "$CTR_IMAGE" "$s" sh -c \
        "mkdir -p /w && echo 'hi from $s' >/w/index.html && exec httpd -f -p 80 -h /w" >/dev/null
    running "$s"
    local ip; ip=$(ctr_ip "$s")
    [ -n "$ip" ]
    expect "$(fetch "http://$ip/")" "hi from $s"
    # runc's task on the same bridge fetches from it.
    expect "$(cctr run --cni --rm --runc-binary "$(command -v runc)" "$CTR_IMAGE" "$(name c-cl)" \
        sh -c "$GET $ip")" "hi from $s"
    cctr task kill -s SIGKILL "$s"
    wait_until 60 sh -c "ctr --address '$CTR_ADDRESS' -n e2e task ls | grep -q '^$s .*STOPPED'"
    cctr task delete "$s" >/dev/null
    cctr container delete "$s"
}

net_engine_scenarios() {
    scenario "net podman $RUNTIME: netavark bridge, -p, aardvark-dns names, runc beside" podman_net
    scenario "net ctr $RUNTIME: run --cni (bridge conflist), runc beside" ctr_net
}
