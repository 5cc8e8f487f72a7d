# Docker scenarios, sourced by tests/e2e/in-vm with $RUNTIME (runvm or runc), $IMAGE (a
# busybox image), $W (a scratch directory) and a running dockerd. Every scenario asks for
# runc's behaviour; the few that look at the VM itself (its memory and CPUs) check that
# only with runvm.

# A container with the runtime under test and no network (fast; the network scenarios are
# net.sh's).
drun() { docker run --runtime "$RUNTIME" --network none "$@"; }
dcreate() { docker create --runtime "$RUNTIME" --network none "$@"; }
# A unique container name per runtime pass.
name() { echo "$RUNTIME-$1"; }

docker_echo() {
    expect "$(drun --rm "$IMAGE" echo hello)" hello
}

# exit_codes RUN CLI NAME: exit codes 0, 1, 42 and 137 (killed) through a docker-shaped
# CLI (docker's or podman's): RUN runs a container, CLI is the rest of that CLI.
exit_codes() {
    local run=$1 cli=$2 c; c=$(name "$3")
    expect "$(status "$run" --rm "$IMAGE" true)" 0
    expect "$(status "$run" --rm "$IMAGE" false)" 1
    expect "$(status "$run" --rm "$IMAGE" sh -c 'exit 42')" 42
    "$run" -d --name "$c" "$IMAGE" sleep 1000 >/dev/null
    "$cli" kill "$c" >/dev/null
    expect "$("$cli" wait "$c")" 137
    "$cli" rm "$c" >/dev/null
}

docker_exit_codes() {
    exit_codes drun docker k9
}

docker_stop() {
    local t k; t=$(name stop-term) k=$(name stop-kill)
    drun -d --name "$t" "$IMAGE" sh -c 'trap "exit 3" TERM; while :; do sleep 0.2; done' >/dev/null
    drun -d --name "$k" "$IMAGE" sleep 1000 >/dev/null
    wait_until 60 docker exec "$t" true
    docker stop -t 30 "$t" >/dev/null
    expect "$(docker inspect -f '{{.State.ExitCode}}' "$t")" 3
    # PID 1 without a handler ignores SIGTERM: SIGKILL after the timeout.
    docker stop -t 2 "$k" >/dev/null
    expect "$(docker inspect -f '{{.State.ExitCode}}' "$k")" 137
    docker rm "$t" "$k" >/dev/null
}

docker_exec() {
    local c; c=$(name exec)
    drun -d --name "$c" "$IMAGE" sleep 1000 >/dev/null
    expect "$(status docker exec "$c" sh -c 'exit 5')" 5
    expect "$(echo through-stdin | docker exec -i "$c" cat)" through-stdin
    expect "$(docker exec -t "$c" tty | tr -d '\r')" /dev/pts/0
    expect "$(docker exec -u 1000 -w /tmp -e X=y "$c" sh -c 'echo $(id -u) $(pwd) $X')" \
        "1000 /tmp y"
    docker rm -f "$c" >/dev/null
}

docker_it_resize() {
    # docker's client on a terminal (script(1) makes one, 33x77): the container sees that
    # size, then the new one once the terminal is resized (client -> dockerd -> shim ->
    # the runtime's console -> the process's SIGWINCH). stty sets rows and columns one
    # at a time: the container waits for both.
    local log=$W/it-$RUNTIME.log inner=$W/it-$RUNTIME.sh
    cat >"$inner" <<INNER
stty rows 33 cols 77
(until grep -q 'first 33 77' "$log"; do sleep 0.2; done; stty -F /dev/tty rows 40 cols 100) &
docker run -it --rm --runtime $RUNTIME --network none $IMAGE sh -c \
    'until [ "\$(stty size)" = "33 77" ]; do sleep 0.2; done; echo first \$(stty size)
     until [ "\$(stty size)" = "40 100" ]; do sleep 0.2; done; echo now \$(stty size)'
INNER
    timeout 120 script -qefc "sh $inner" "$log" >/dev/null
    expect_in "$(tr -d '\r' <"$log")" "first 33 77"
    expect_in "$(tr -d '\r' <"$log")" "now 40 100"
}

docker_logs() {
    local c; c=$(name logs)
    drun --name "$c" "$IMAGE" sh -c 'echo out; echo err >&2' >/dev/null 2>&1
    expect "$(docker logs "$c" 2>/dev/null)" out
    expect "$(docker logs "$c" 2>&1 >/dev/null)" err
    docker rm "$c" >/dev/null
}

docker_kill_usr1() {
    local c; c=$(name usr1)
    drun -d --name "$c" "$IMAGE" sh -c 'trap "exit 10" USR1; while :; do sleep 0.2; done' >/dev/null
    wait_until 60 docker exec "$c" true
    docker kill -s USR1 "$c" >/dev/null
    expect "$(docker wait "$c")" 10
    docker rm "$c" >/dev/null
}

docker_restart() {
    local c before; c=$(name restart)
    drun -d --name "$c" "$IMAGE" sleep 1000 >/dev/null
    before=$(docker inspect -f '{{.State.StartedAt}}' "$c")
    docker restart -t 1 "$c" >/dev/null
    expect "$(docker inspect -f '{{.State.Status}}' "$c")" running
    [ "$(docker inspect -f '{{.State.StartedAt}}' "$c")" != "$before" ]
    docker exec "$c" true
    docker rm -f "$c" >/dev/null
}

docker_pause() {
    local c; c=$(name pause)
    drun -d --name "$c" "$IMAGE" sleep 1000 >/dev/null
    docker pause "$c" >/dev/null
    expect "$(docker inspect -f '{{.State.Status}}' "$c")" paused
    docker unpause "$c" >/dev/null
    expect "$(docker inspect -f '{{.State.Status}}' "$c")" running
    docker exec "$c" true
    docker rm -f "$c" >/dev/null
}

docker_volumes() {
    local v; v=$(name vol)
    mkdir -p "$W/host-$RUNTIME"
    echo from-host >"$W/host-$RUNTIME/in"
    expect "$(drun --rm -v "$W/host-$RUNTIME:/h" "$IMAGE" sh -c 'cat /h/in; echo from-guest >/h/out')" \
        from-host
    expect "$(cat "$W/host-$RUNTIME/out")" from-guest
    docker volume create "$v" >/dev/null
    drun --rm -v "$v:/v" "$IMAGE" sh -c 'echo kept >/v/f'
    expect "$(drun --rm -v "$v:/v" "$IMAGE" cat /v/f)" kept
    docker volume rm "$v" >/dev/null
    expect_in "$(drun --rm --tmpfs /t "$IMAGE" grep ' /t ' /proc/mounts)" tmpfs
}

docker_read_only() {
    local out
    out=$(drun --rm --read-only "$IMAGE" touch /x 2>&1) && return 1
    expect_in "$out" "Read-only file system"
}

docker_process_settings() {
    expect "$(drun --rm -e A=b -w /tmp -u 1000:1000 --hostname hh "$IMAGE" \
        sh -c 'echo $A $(pwd) $(id -u):$(id -g) $(hostname)')" "b /tmp 1000:1000 hh"
}

docker_files_docker_makes() {
    expect "$(drun --rm --hostname named "$IMAGE" sh -c \
        'test -s /etc/hosts && test -e /etc/resolv.conf && cat /etc/hostname')" named
}

docker_resources() {
    local c pid id; c=$(name res)
    drun -d --name "$c" --memory 256m --cpus 1 "$IMAGE" sleep 1000 >/dev/null
    expect "$(docker exec "$c" cat /sys/fs/cgroup/memory.max)" 268435456
    expect "$(docker exec "$c" cat /sys/fs/cgroup/cpu.max)" "100000 100000"
    # On the host, the container's cgroup holds its host process.
    pid=$(docker inspect -f '{{.State.Pid}}' "$c")
    id=$(docker inspect -f '{{.Id}}' "$c")
    grep -qx "$pid" "/sys/fs/cgroup/docker/$id/cgroup.procs"
    if [ "$RUNTIME" = runvm ]; then
        # The VM itself is sized from the limits: one vCPU, the limit plus the guest's own.
        expect "$(docker exec "$c" nproc)" 1
        local kb; kb=$(docker exec "$c" awk '/MemTotal/ { print $2 }' /proc/meminfo)
        [ "$kb" -le $(( (256 + 64) * 1024 )) ] && [ "$kb" -ge $(( 256 * 1024 )) ]
    fi
    docker rm -f "$c" >/dev/null
}

docker_top() {
    local c pid; c=$(name top)
    drun -d --name "$c" "$IMAGE" sleep 1000 >/dev/null
    pid=$(docker inspect -f '{{.State.Pid}}' "$c")
    docker top "$c" | awk -v p="$pid" '$2 == p { found = 1 } END { exit !found }'
    docker rm -f "$c" >/dev/null
}

docker_cp_diff_commit() {
    local c m; c=$(name cp) m=$(name made)
    echo copied-in >"$W/cp-$RUNTIME"
    dcreate --name "$c" "$IMAGE" sh -c 'cat /in.txt; echo made >/out.txt' >/dev/null
    docker cp "$W/cp-$RUNTIME" "$c:/in.txt"
    expect "$(docker start -a "$c")" copied-in
    docker cp "$c:/out.txt" "$W/out-$RUNTIME"
    expect "$(cat "$W/out-$RUNTIME")" made
    expect_in "$(docker diff "$c")" "A /out.txt"
    docker commit "$c" "$m" >/dev/null
    expect "$(drun --rm "$m" cat /out.txt)" made
    docker rm "$c" >/dev/null
    docker rmi "$m" >/dev/null
}

# A running container's root changed on the host over a file the container has read
# (runvm's guest keeps the data of its root file system cached across opens; a file changed
# behind its back must be read again at its next open): edited in place in the container's
# merged directory (the same inode and size: only the contents tell), then replaced by
# `docker cp` (a new inode, longer). Names and attributes are cached for up to 1 s under
# runvm (README, differences from runc), hence the pause before the replaced name is read.
# Then docker diff and commit (which pauses) of the running container.
docker_cp_running() {
    local c m merged; c=$(name cprun) m=$(name cpmade)
    drun -d --name "$c" "$IMAGE" sleep 1000 >/dev/null
    docker exec "$c" sh -c 'echo first >/f.txt; cat /f.txt /f.txt >/dev/null'
    expect "$(docker exec "$c" cat /f.txt)" first
    merged=$(docker inspect -f '{{.GraphDriver.Data.MergedDir}}' "$c")
    [ -f "$merged/f.txt" ] || { echo "no $merged/f.txt"; return 1; }
    echo secnd >"$merged/f.txt"
    expect "$(docker exec "$c" cat /f.txt)" secnd
    echo third-and-longer >"$W/cprun-$RUNTIME"
    docker cp "$W/cprun-$RUNTIME" "$c:/f.txt"
    sleep 1
    expect "$(docker exec "$c" cat /f.txt)" third-and-longer
    docker exec "$c" sh -c 'echo made-while-running >/g.txt'
    expect_in "$(docker diff "$c")" "A /g.txt"
    docker commit "$c" "$m" >/dev/null
    expect "$(drun --rm "$m" cat /g.txt /f.txt)" "made-while-running
third-and-longer"
    docker rm -f "$c" >/dev/null
    docker rmi "$m" >/dev/null
}

# A bind mount's source edited on the host while the container runs: the container reads
# the new contents at its next open (bind mounts are close-to-open under runvm), the same
# size first (only the contents tell), then longer, then a name it had found missing. Names
# and attributes are cached for up to 1 s under runvm, hence the pauses before a changed
# size or a new name is looked at.
docker_bind_host_edits() {
    local c d; c=$(name bindedit) d=$W/bindedit-$RUNTIME
    rm -rf "$d" && mkdir -p "$d" && echo first >"$d/f.txt"
    drun -d --name "$c" -v "$d:/b" "$IMAGE" sleep 1000 >/dev/null
    expect "$(docker exec "$c" sh -c 'cat /b/f.txt; cat /b/f.txt; cat /b/new.txt 2>&1 | grep -c "No such"')" \
        "first
first
1"
    echo secnd >"$d/f.txt"
    expect "$(docker exec "$c" cat /b/f.txt)" secnd
    echo third-and-longer >>"$d/f.txt"
    echo made-on-the-host >"$d/new.txt"
    sleep 1
    expect "$(docker exec "$c" cat /b/f.txt /b/new.txt)" "secnd
third-and-longer
made-on-the-host"
    docker rm -f "$c" >/dev/null
}

docker_missing_entrypoint() {
    local out rc
    out=$(drun --rm "$IMAGE" nope 2>&1) && return 1
    rc=$(status drun --rm "$IMAGE" nope)
    expect "$rc" 127
    expect_in "$out" 'exec: "nope": executable file not found in $PATH'
}

docker_network_none() {
    expect_in "$(drun --rm "$IMAGE" cat /proc/net/dev)" "lo:"
}

docker_scenarios() {
    scenario "docker $RUNTIME: run --rm echo" docker_echo
    scenario "docker $RUNTIME: exit codes 0 1 42 137" docker_exit_codes
    scenario "docker $RUNTIME: stop (SIGTERM, then SIGKILL after the timeout)" docker_stop
    scenario "docker $RUNTIME: exec (code, -i, -t, -u -w -e)" docker_exec
    scenario "docker $RUNTIME: run -it, then a resize" docker_it_resize
    scenario "docker $RUNTIME: logs keep stdout and stderr apart" docker_logs
    scenario "docker $RUNTIME: kill -s USR1 reaches a trap" docker_kill_usr1
    scenario "docker $RUNTIME: restart" docker_restart
    scenario "docker $RUNTIME: pause and unpause" docker_pause
    scenario "docker $RUNTIME: host dir, named volume, tmpfs" docker_volumes
    scenario "docker $RUNTIME: --read-only" docker_read_only
    scenario "docker $RUNTIME: -e -w -u --hostname" docker_process_settings
    scenario "docker $RUNTIME: hosts, resolv.conf, hostname" docker_files_docker_makes
    scenario "docker $RUNTIME: --memory --cpus in the container and on the host" docker_resources
    scenario "docker $RUNTIME: top" docker_top
    scenario "docker $RUNTIME: cp in and out, diff, commit" docker_cp_diff_commit
    scenario "docker $RUNTIME: cp into a running container, diff, commit" docker_cp_running
    scenario "docker $RUNTIME: bind mount edited on the host while running" docker_bind_host_edits
    scenario "docker $RUNTIME: a missing entrypoint" docker_missing_entrypoint
    scenario "docker $RUNTIME: --network none" docker_network_none
}
