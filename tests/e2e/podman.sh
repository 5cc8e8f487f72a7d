# Podman scenarios (podman 4.3 + conmon, `--runtime` naming the runtime: runc is podman's
# own, runvm comes from the table packaging/runvm-register writes), sourced by
# tests/e2e/in-vm with $RUNTIME, $W and the image imported as $IMAGE.

# podman with its own storage and state on the e2e tmpfs, no network, the runtime under test.
prun() {
    podman --root "$W/podman" --runroot "$W/podman-run" ${RUNTIME:+--runtime "$RUNTIME"} \
        --cgroup-manager cgroupfs --events-backend file run --network none "$@"
}
pman() {
    podman --root "$W/podman" --runroot "$W/podman-run" ${RUNTIME:+--runtime "$RUNTIME"} \
        --cgroup-manager cgroupfs --events-backend file "$@"
}

podman_echo() {
    expect "$(prun --rm "$IMAGE" echo hello)" hello
}

podman_exit_codes() {
    exit_codes prun pman pk9 # tests/e2e/docker.sh
}

podman_exec() {
    local c; c=$(name pexec)
    prun -d --name "$c" "$IMAGE" sleep 1000 >/dev/null
    expect "$(status pman exec "$c" sh -c 'exit 5')" 5
    expect "$(echo through-stdin | pman exec -i "$c" cat)" through-stdin
    expect "$(pman exec -t "$c" tty | tr -d '\r')" /dev/pts/0
    pman rm -f -t 0 "$c" >/dev/null
}

podman_scenarios() {
    scenario "podman $RUNTIME: run --rm echo" podman_echo
    scenario "podman $RUNTIME: exit codes 0 1 42 137" podman_exit_codes
    scenario "podman $RUNTIME: exec (code, -i, -t)" podman_exec
}

# Podman's configuration: root here lacks CAP_SYS_RESOURCE, so no ulimit above the hard one;
# cgroupfs (no systemd in L1); events to a file.
setup_podman() {
    cat >"$W/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
# conmon starts the runtime with its own environment: this one names runvm's guest image.
conmon_env_vars = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "RUNVM_CONFIG=$RUNVM_CONFIG"]
[network]
# netavark (with aardvark-dns) as on a fresh podman 4 install, even once CNI configurations
# (the ctr scenarios') exist.
network_backend = "netavark"
CONF
    # runvm's runtime table, as packaging/install registers it: a containers.conf.d drop-in
    # (podman reads no drop-in beside $CONTAINERS_CONF, so it joins the file here).
    "$REPO/packaging/runvm-register" --binary "$REPO/target/debug/runvm" \
        --podman-dir "$W/containers.conf.d" add podman
    cat "$W/containers.conf.d/50-runvm.conf" >>"$W/containers.conf"
    docker save e2e-busybox | pman load >/dev/null
    pman image exists e2e-busybox
}
