#!/bin/sh
# Two network namespaces joined by a veth pair, for bench-configs/hosts.toml: ipcb-a
# (10.77.0.1, interface ipcb-va) and ipcb-b (10.77.0.2, interface ipcb-vb). Root only.
#   sudo scripts/netns.sh up      # make them
#   sudo scripts/netns.sh down    # remove them (and the veth pair with them)
set -eu
case "${1:-}" in
up)
    ip netns add ipcb-a
    ip netns add ipcb-b
    ip link add ipcb-va type veth peer name ipcb-vb
    ip link set ipcb-va netns ipcb-a
    ip link set ipcb-vb netns ipcb-b
    ip -n ipcb-a addr add 10.77.0.1/24 dev ipcb-va
    ip -n ipcb-b addr add 10.77.0.2/24 dev ipcb-vb
    for ns in ipcb-a ipcb-b; do ip -n "$ns" link set lo up; done
    ip -n ipcb-a link set ipcb-va up
    ip -n ipcb-b link set ipcb-vb up
    ;;
down)
    ip netns del ipcb-a 2>/dev/null || true
    ip netns del ipcb-b 2>/dev/null || true
    ;;
*)
    echo "usage: $0 up|down" >&2
    exit 2
    ;;
esac
