#!/bin/sh
# strata's benchmarks, next to the floors and peers in bench/workloads/README.md.
# Usage: bench/run.sh [start|network|rootless|multiarch|small|fanout|bigctx|dfscale|ctxscale|import|registry|all]   (default: all)
# Needs root, hyperfine, runc, busybox-static (scripts/deps.sh installs them). Prints rows of
# "workload phase: median (and the floor/peer measured in the same run)".
set -eu
cd "$(dirname "$0")/.."
what=${1:-all}
cargo build --release --locked -q
bin=$(pwd)/target/x86_64-unknown-linux-gnu/release/strata
# STRATA_BENCH_DIR: where stores and contexts go (default /var/tmp); point it at a freshly made
# filesystem to keep a long-used disk's inode allocation out of the figures.
work=$(mktemp -d "${STRATA_BENCH_DIR:-/var/tmp}/strata-bench.XXXXXX")
# A phase that stops half-way leaves no container, bridge or firewall table behind.
trap '$S system reset -f >/dev/null 2>&1; rm -rf "$work"' EXIT
# strata runs installed, as runc, unshare and skopeo are (dpkg writes files with write(2)):
# the file the linker wrote sits in small pages in the page cache, which costs every exec of
# it page faults (0.3-0.8 ms more per container start measured; see bench/RESULTS.md).
install -m 0755 "$bin" "$work/strata"
bin=$work/strata
S="$bin --root $work/store"
./tests/fixtures/busybox-rootfs.sh "$work/busybox.tar"
$S import "$work/busybox.tar" busybox:latest >/dev/null
median() { hyperfine -N -w "$1" -r "$2" --export-json "$work/h.json" "$3" >/dev/null 2>&1; python3 -c "import json;print('%.4f' % json.load(open('$work/h.json'))['results'][0]['median'])"; }
# median with a command run (untimed) before each timed run
median_prep() { hyperfine -N -w "$1" -r "$2" --prepare "$3" --export-json "$work/h.json" "$4" >/dev/null 2>&1; python3 -c "import json;print('%.4f' % json.load(open('$work/h.json'))['results'][0]['median'])"; }

if [ "$what" = start ] || [ "$what" = all ]; then
  mkdir -p "$work/rootfs" && tar -xf "$work/busybox.tar" -C "$work/rootfs"
  mkdir -p "$work/bundle" && cp -a "$work/rootfs" "$work/bundle/rootfs"
  (cd "$work/bundle" && runc spec && sed -i 's/"sh"/"true"/; s/"terminal": true/"terminal": false/' config.json)
  floor="unshare -m -p -f -u -i -n chroot $work/rootfs /bin/true"
  # strata, the floor and runc alternate run by run (bench/alternate.py): on this kind of
  # machine their times drift by more than the differences measured, together. Like the
  # floor (`unshare -n`) and runc's default spec, strata gets a network namespace with no
  # network (`--network none`); the network phase measures the default bridge.
  set -- $(bench/alternate.py 30 3 "$S run --rm --network none busybox true" "$floor" "runc --root $work/runc run -b $work/bundle bench$$")
  s=$1 f=$2 r=$3
  id=$($S run -d busybox sleep 600)
  e=$(median 3 30 "$S exec $id true")
  $S rm -f "$id" >/dev/null
  # A start after an idle spell (what a user sees): back to back, the kernel keeps some locks'
  # fast paths warm from one run to the next.
  set -- $(bench/alternate.py 20 2 --prepare "sleep 0.2" "$S run --rm --network none busybox true" "$floor")
  sidle=$1 fidle=$2
  echo "start run --rm --network none true: strata ${s}s floor ${f}s runc ${r}s (x$(python3 -c "print(round($s/$f,2))") floor, runc/strata $(python3 -c "print(round($r/$s,2))")); exec true: ${e}s; after 0.2 s idle: strata ${sidle}s floor ${fidle}s (x$(python3 -c "print(round($sidle/$fidle,2))"))"
fi

build_phases() { # name ctx dockerfile-dir incr-cmd
  # cold and incr write layers: `sync` first, as for pulls (see the registry phase)
  name=$1; ctx=$2; shift 2
  cold=$(median_prep 1 5 sync "$S build -q --no-cache $ctx")
  $S build -q "$ctx" >/dev/null
  warm=$(median 2 10 "$S build -q $ctx")
  line="$name cold ${cold}s warm ${warm}s"
  if [ $# -gt 0 ]; then
    incr=$(median_prep 1 5 sync "sh -c '$1; $S build -q $ctx >/dev/null'")
    line="$line incr ${incr}s"
  fi
  echo "$line"
}

if [ "$what" = network ] || [ "$what" = all ]; then
  # Starts on the default bridge next to `--network none`, on a user network whose name server
  # already runs (a sleeper keeps it), and podman's on its default bridge (netavark), alternating.
  # (--ulimit: podman raises nofile and nproc above what this machine lets a container set)
  P="podman --root $work/podman --runroot $work/podman-run --storage-driver vfs"
  $P import -q "$work/busybox.tar" localhost/busybox:latest >/dev/null
  $S network create benchnet >/dev/null
  keeper=$($S run -d --network benchnet busybox sleep 600)
  set -- $(bench/alternate.py 20 2 "$S run --rm busybox true" "$S run --rm --network none busybox true" \
    "$S run --rm --network benchnet busybox true" "$P run --rm --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 localhost/busybox true")
  bridge=$1 none=$2 user=$3 podman=$4
  $S rm -f "$keeper" >/dev/null
  echo "network run --rm true: bridge ${bridge}s none ${none}s (x$(python3 -c "print(round($bridge/$none,2))")) user network ${user}s; podman bridge ${podman}s (strata/podman $(python3 -c "print(round($bridge/$podman,3))"))"
  # A 100 MB file from a container's httpd: through a published port next to host networking.
  mkdir -p "$work/www" && head -c 100000000 /dev/urandom > "$work/www/big"
  pub=$($S run -d -v "$work/www:/www:ro" -p 127.0.0.1:18200:80 busybox httpd -f -p 80 -h /www)
  hst=$($S run -d --network host -v "$work/www:/www:ro" busybox httpd -f -p 18201 -h /www)
  # The same through -p on a network whose MTU is loopback's (`-o mtu`): what the default
  # MTU (1500, as Docker's) costs next to loopback's 65536.
  $S network create -o mtu=65535 jumbo >/dev/null
  big=$($S run -d --network jumbo -v "$work/www:/www:ro" -p 127.0.0.1:18202:80 busybox httpd -f -p 80 -h /www)
  for p in 18200 18201 18202; do
    until curl -sf -o /dev/null http://127.0.0.1:$p/big; do sleep 0.1; done
  done
  set -- $(bench/alternate.py 15 1 "curl -sf -o /dev/null http://127.0.0.1:18200/big" "curl -sf -o /dev/null http://127.0.0.1:18201/big" "curl -sf -o /dev/null http://127.0.0.1:18202/big")
  tp=$1 th=$2 tj=$3
  $S rm -f "$pub" "$hst" "$big" >/dev/null
  $S system reset -f >/dev/null
  echo "network 100 MB through -p ${tp}s ($(python3 -c "print(round(100/$tp))") MB/s) host network ${th}s ($(python3 -c "print(round(100/$th))") MB/s; -p/host throughput $(python3 -c "print(round($th/$tp,2))")); with MTU 65535 ${tj}s (x$(python3 -c "print(round($th/$tj,2))") host)"
fi
if [ "$what" = rootless ] || [ "$what" = all ]; then
  # A user of the benchmark's own (subordinate ranges, home in $work). Every command, root's
  # too, goes through the same setpriv wrapper, so the wrapper's cost is in all of them.
  u=strata-bench$$
  useradd -M -d "$work/home" -s /bin/sh -K SUB_UID_COUNT=0 -K SUB_GID_COUNT=0 "$u"
  usermod --add-subuids 700000-765535 --add-subgids 700000-765535 "$u"
  trap 'pkill -KILL -u "$u" 2>/dev/null; sleep 0.2; userdel "$u" 2>/dev/null; rm -rf "/tmp/strata-$(id -u "$u" 2>/dev/null)"; $S system reset -f >/dev/null 2>&1; rm -rf "$work"' EXIT
  chmod 755 "$work"
  mkdir -p "$work/home" && cp "$work/busybox.tar" "$work/home/" && cp -r bench/workloads/small bench/workloads/fanout "$work/home/"
  chown -R "$u:" "$work/home"
  as_user="setpriv --reuid=$u --regid=$u --clear-groups env -i HOME=$work/home PATH=/usr/bin:/bin"
  as_root="setpriv --reuid=0 --regid=0 --clear-groups env -i HOME=/root PATH=/usr/bin:/bin"
  $as_user "$bin" import "$work/home/busybox.tar" busybox:latest >/dev/null
  run_rl="$as_user $bin run --rm --network none busybox true"
  run_root="$as_root $S run --rm --network none busybox true"
  podman_rl="$as_user podman run --rm --network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 busybox true"
  if $as_user podman import -q "$work/home/busybox.tar" busybox >/dev/null 2>&1 && $podman_rl >/dev/null 2>&1; then
    set -- $(bench/alternate.py 20 2 "$run_rl" "$run_root" "$podman_rl")
    p=$3
  else
    set -- $(bench/alternate.py 20 2 "$run_rl" "$run_root") n/a
    p=n/a
  fi
  rl=$1 rt=$2
  echo "rootless run --rm --network none true: rootless ${rl}s root ${rt}s (x$(python3 -c "print(round($rl/$rt,2))") root) podman rootless ${p}s"
  for w in small fanout; do
    cp -r "bench/workloads/$w" "$work/$w-root"
    set -- $(bench/alternate.py 5 1 --prepare sync "$as_user $bin build -q --no-cache $work/home/$w" "$as_root $S build -q --no-cache $work/$w-root")
    echo "rootless build $w cold: rootless ${1}s root ${2}s (x$(python3 -c "print(round($1/$2,2))") root)"
  done
fi

if [ "$what" = multiarch ] || [ "$what" = all ]; then
  # One RUN step (a shell loop: interpreted work, the emulator's worst case), native next to
  # emulated (arm64 through qemu-user-static), cold, alternating; and a container start of each.
  ./scripts/binfmt.sh
  ./tests/fixtures/busybox-rootfs.sh "$work/busybox-arm64.tar" arm64
  $S import --platform linux/arm64 "$work/busybox-arm64.tar" busybox:arm64 >/dev/null
  $S tag busybox:latest busybox:amd64
  mkdir -p "$work/loop"
  printf 'ARG TARGETARCH\nFROM busybox:${TARGETARCH}\nRUN i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done\n' > "$work/loop/Dockerfile"
  set -- $(bench/alternate.py 5 1 --prepare sync "$S build -q --no-cache $work/loop" "$S build -q --no-cache --platform linux/arm64 $work/loop")
  echo "multiarch RUN loop cold: native ${1}s emulated arm64 ${2}s (x$(python3 -c "print(round($2/$1,2))") native)"
  set -- $(bench/alternate.py 20 2 "$S run --rm --network none busybox:amd64 true" "$S run --rm --network none busybox:arm64 true")
  echo "multiarch run --rm true: native ${1}s emulated arm64 ${2}s (x$(python3 -c "print(round($2/$1,2))") native)"
  # examples/multiarch cold (its compiler stage runs natively, apt-get included) for the host
  # alone and for amd64+arm64 at once (target: x1.3; the arm64 build adds the cross compiler's
  # packages and an emulated COPY stage).
  ./tests/fixtures/debian-rootfs.sh /var/tmp/strata-debian-bookworm.tar
  $S import /var/tmp/strata-debian-bookworm.tar debian:bookworm >/dev/null
  set -- $(bench/alternate.py 3 1 --prepare sync "$S build -q --no-cache examples/multiarch" "$S build -q --no-cache --platform linux/amd64,linux/arm64 examples/multiarch")
  echo "multiarch examples/multiarch cold: one platform ${1}s two platforms ${2}s (x$(python3 -c "print(round($2/$1,2))") one)"
fi

if [ "$what" = small ] || [ "$what" = all ]; then
  cp -r "bench/workloads/small" "$work/small"
  build_phases small "$work/small" "date +%s%N >> $work/small/a.txt"
fi
if [ "$what" = fanout ] || [ "$what" = all ]; then
  cp -r "bench/workloads/fanout" "$work/fanout"
  build_phases fanout "$work/fanout"
fi
if [ "$what" = bigctx ] || [ "$what" = all ]; then
  ./tests/fixtures/debian-rootfs.sh /var/tmp/strata-debian-bookworm.tar
  $S import /var/tmp/strata-debian-bookworm.tar debian:bookworm >/dev/null
  python3 "bench/workloads/gen-bigctx.py" "$work/bigctx" >/dev/null
  build_phases bigctx "$work/bigctx" "date +%s%N >> $work/bigctx/src/m00/p0/f0.txt"
fi
if [ "$what" = dfscale ] || [ "$what" = all ]; then
  # Dockerfile scale: n ENV lines then a RUN; planning (--dry-run) and a cold build, each with
  # its peak RSS. Linear is the target: 2k lines < 3 s, 5k lines < 8 s.
  line="dfscale"
  for n in 1000 2000 5000; do
    mkdir -p "$work/env$n"
    python3 -c "import sys; n=int(sys.argv[1]); print('FROM busybox'); [print(f'ENV V{i}=value{i}') for i in range(n)]; print('RUN true')" "$n" > "$work/env$n/Dockerfile"
    plan=$(median 1 5 "$S build --dry-run $work/env$n")
    cold=$(median 1 5 "$S build -q --no-cache $work/env$n")
    rss=$( { /usr/bin/time -f %M $S build -q --no-cache "$work/env$n" >/dev/null; } 2>&1 | tail -1)
    line="$line ${n}: plan ${plan}s cold ${cold}s (peak RSS ${rss} KB)"
  done
  echo "$line"
fi
if [ "$what" = ctxscale ] || [ "$what" = all ]; then
  # Context scale: warm and incremental (one file changed) rebuilds of a COPY of 10k, 40k and
  # 160k small files, each with the warm rebuild's peak RSS. Time linear in files, <= 100 MB
  # RSS at 160k.
  line="ctxscale"
  for n in 10000 40000 160000; do
    python3 bench/workloads/gen-scale.py "$work/scale$n" "$n"
    $S build -q "$work/scale$n" >/dev/null
    warm=$(median 1 5 "$S build -q $work/scale$n")
    rss=$( { /usr/bin/time -f %M $S build -q "$work/scale$n" >/dev/null; } 2>&1 | tail -1)
    incr=$(median_prep 1 5 sync "sh -c 'date +%s%N >> $work/scale$n/src/d0/e0/f0.txt; $S build -q $work/scale$n >/dev/null'")
    line="$line ${n}: warm ${warm}s (peak RSS ${rss} KB) incr ${incr}s"
  done
  echo "$line"
fi
if [ "$what" = import ] || [ "$what" = all ]; then
  ./tests/fixtures/debian-rootfs.sh /var/tmp/strata-debian-bookworm.tar
  mkdir -p "$work/deb" && tar -xf /var/tmp/strata-debian-bookworm.tar -C "$work/deb"
  floor=$(median 1 5 "sh -c 'tar -C $work/deb -cf - . | sha256sum >/dev/null'")
  # `sync` before each run that writes: see the registry pulls below.
  untar=$(median_prep 1 5 sync "sh -c 'd=\$(mktemp -d -p $work); tar -xf /var/tmp/strata-debian-bookworm.tar -C \$d'")
  # each run into a fresh store, nothing deleted meanwhile (deleting 128 MB of small files
  # keeps this disk busy with discards for seconds)
  imp=$(median_prep 1 5 sync "sh -c 'd=\$(mktemp -d -p $work); $bin --root \$d import /var/tmp/strata-debian-bookworm.tar debian:bookworm >/dev/null'")
  $bin --root $work/imp import /var/tmp/strata-debian-bookworm.tar debian:bookworm >/dev/null
  sav=$(median 1 5 "$bin --root $work/imp save -o $work/deb-save.tar debian:bookworm")
  rss_imp=$( { /usr/bin/time -f %M sh -c "rm -rf $work/imp2; $bin --root $work/imp2 import /var/tmp/strata-debian-bookworm.tar d >/dev/null"; } 2>&1 | tail -1)
  rss_sav=$( { /usr/bin/time -f %M $bin --root $work/imp save -o $work/deb-save.tar debian:bookworm; } 2>&1 | tail -1)
  mb=$(du -sm "$work/deb" | cut -f1)
  echo "import ${imp}s ($(python3 -c "print(round($mb/$imp))") MB/s, peak RSS ${rss_imp} KB) save ${sav}s ($(python3 -c "print(round($mb/$sav))") MB/s, peak RSS ${rss_sav} KB) floor tar|sha256sum ${floor}s (tar -x alone ${untar}s)"
fi
if [ "$what" = registry ] || [ "$what" = all ]; then
  # push and pull of debian:bookworm through Debian's distribution server on loopback, next to
  # skopeo copying the same (already gzip-compressed) blobs. Every timed push starts from an
  # empty registry, so nothing is skipped or mounted.
  ./tests/fixtures/debian-rootfs.sh /var/tmp/strata-debian-bookworm.tar
  port=$(python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])")
  printf 'version: 0.1\nlog: {level: error}\nstorage: {filesystem: {rootdirectory: %s/regdata}, delete: {enabled: true}}\nhttp: {addr: 127.0.0.1:%s}\n' "$work" "$port" > "$work/reg.yml"
  {
    echo '#!/bin/sh'
    echo "[ -f $work/reg.pid ] && kill \$(cat $work/reg.pid) 2>/dev/null && sleep 0.2"
    echo "rm -rf $work/regdata"
    echo "docker-registry serve $work/reg.yml >/dev/null 2>&1 &"
    echo "echo \$! > $work/reg.pid"
    echo "until curl -sf http://127.0.0.1:$port/v2/ >/dev/null; do sleep 0.05; done"
  } > "$work/reg-reset.sh"
  chmod +x "$work/reg-reset.sh"
  "$work/reg-reset.sh"
  R=127.0.0.1:$port
  $bin --root "$work/reg-src" import /var/tmp/strata-debian-bookworm.tar debian:bookworm >/dev/null
  $bin --root "$work/reg-src" push -q debian:bookworm "$R/deb:1" >/dev/null # makes the gzip blob once
  skopeo copy -q --src-tls-verify=false "docker://$R/deb:1" "oci:$work/deb-oci:x"
  # strata and skopeo alternate run by run (bench/alternate.py), as for starts.
  set -- $(bench/alternate.py 7 1 --prepare "$work/reg-reset.sh" \
    "$bin --root $work/reg-src push -q debian:bookworm $R/deb:1" \
    "skopeo copy -q --dest-tls-verify=false oci:$work/deb-oci:x docker://$R/deb:1")
  push=$1 spush=$2
  # `sync` before each run: the previous run's dirty pages are written back outside the
  # timed run (writeback happens after a command exits, and on a loop-mounted image it takes
  # CPU from the next run otherwise).
  set -- $(bench/alternate.py 7 1 --prepare sync \
    "sh -c 'd=\$(mktemp -d -p $work); $bin --root \$d pull -q $R/deb:1 >/dev/null'" \
    "sh -c 'd=\$(mktemp -d -p $work); skopeo copy -q --src-tls-verify=false docker://$R/deb:1 oci:\$d/o:x'")
  pull=$1 spull=$2
  ppull=$(median_prep 1 3 sync "sh -c 'd=\$(mktemp -d -p $work); podman --root \$d/r --runroot \$d/rr --storage-driver overlay pull -q --tls-verify=false $R/deb:1 >/dev/null'")
  "$work/reg-reset.sh"
  rss_push=$( { /usr/bin/time -f %M $bin --root "$work/reg-src" push -q debian:bookworm "$R/deb:1" >/dev/null; } 2>&1 | tail -1)
  rss_pull=$( { /usr/bin/time -f %M $bin --root "$work/reg-pull" pull -q "$R/deb:1" >/dev/null; } 2>&1 | tail -1)
  kill "$(cat "$work/reg.pid")"
  echo "registry push ${push}s (skopeo ${spush}s, x$(python3 -c "print(round($push/$spush,2))"), peak RSS ${rss_push} KB) pull+unpack ${pull}s (skopeo copy, no unpack, ${spull}s, x$(python3 -c "print(round($pull/$spull,2))"), peak RSS ${rss_pull} KB; podman pull, which unpacks too, ${ppull}s, x$(python3 -c "print(round($pull/$ppull,2))"))"
fi
