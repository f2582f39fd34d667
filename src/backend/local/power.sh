#!/bin/sh
# devami shim: power commands inside a local instance (written by devami; do not edit).
# A cloud VM stops when told to. A local instance records the request in
# /run/devami/stop-requested (bound from the host); devami stops the instance when the job that asked ends
# (or at the time given, if the job is still running then). The host is never shut down.
name=${0##*/}
args="$*"
action=poweroff
when=now
usage() {
    echo "usage: $name [OPTIONS...] [TIME] [WALL...]"
    echo "devami: inside a local instance this stops the instance (not the host machine)"
}
case $name in
shutdown)
    when=+1
    while [ $# -gt 0 ]; do
        case $1 in
        -h|-P|--poweroff|-hP|-Ph) action=poweroff ;;
        -H|--halt) action=halt ;;
        -r|--reboot) action=reboot ;;
        -c) action=cancel ;;
        -k) action=wall ;;
        --help) usage; exit 0 ;;
        --no-wall|-f|-F|-n|-q|-a) ;;
        -t) shift ;;
        -*) echo "$name: unrecognized option '$1'" >&2; exit 1 ;;
        *) when=$1; shift; break ;;
        esac
        shift
    done ;;
poweroff|halt|reboot)
    action=$name
    for a in "$@"; do
        case $a in
        --help) usage; exit 0 ;;
        -p|--poweroff) action=poweroff ;;
        --halt) action=halt ;;
        --reboot) action=reboot ;;
        -w|--wtmp-only) exit 0 ;;
        esac
    done ;;
telinit|init)
    case ${1:-} in
    0) action=poweroff ;;
    6) action=reboot ;;
    --help) usage; exit 0 ;;
    *) echo "$name: runlevel '${1:-}' is not available inside a devami local instance" >&2; exit 1 ;;
    esac ;;
systemctl)
    verb=
    for a in "$@"; do
        case $a in
        --help) echo "systemctl (devami shim): only poweroff, halt, reboot and kexec are available inside a local instance"; exit 0 ;;
        -*) ;;
        *) verb=$a; break ;;
        esac
    done
    case $verb in
    poweroff|halt|reboot) action=$verb ;;
    kexec|soft-reboot) action=reboot ;;
    *)
        echo "System has not been booted with systemd as init system (PID 1). Can't operate." >&2
        echo "devami: \`systemctl $*\` is not available inside a local instance" >&2
        exit 1 ;;
    esac ;;
*)
    echo "devami shim: unknown name '$name'" >&2; exit 1 ;;
esac
dir=${DEVAMI_INSTANCE_DIR:-/run/devami}
if [ -z "$dir" ] || [ ! -d "$dir" ]; then
    echo "$name: not inside a devami local instance (no /run/devami); nothing was done" >&2
    exit 1
fi
marker=$dir/stop-requested
case $action in
cancel) rm -f "$marker"; exit 0 ;;
wall) exit 0 ;;
esac
now=$(date +%s)
case $when in
now) due=$now ;;
+*) m=${when#+}; case $m in ''|*[!0-9]*) echo "$name: failed to parse time specification: $when" >&2; exit 1 ;; esac; due=$((now + m * 60)) ;;
*:*) due=$(date -d "$when" +%s 2>/dev/null) || { echo "$name: failed to parse time specification: $when" >&2; exit 1; }
     if [ "$due" -lt "$now" ]; then due=$((due + 86400)); fi ;;
*[!0-9]*|'') echo "$name: failed to parse time specification: $when" >&2; exit 1 ;;
*) due=$((now + when * 60)) ;;
esac
line=$(printf '%s' "$name $args" | tr '\n' ' ')
tmp=$marker.tmp.$$
if ! { printf 'requested=%s\ndue=%s\naction=%s\ncommand=%s\n' "$now" "$due" "$action" "$line" > "$tmp" && mv -f "$tmp" "$marker"; }; then
    echo "$name: could not record the request in $marker" >&2
    exit 1
fi
if [ "$due" -gt "$now" ]; then
    case $action in reboot) what=Reboot ;; halt) what=Halt ;; *) what=Shutdown ;; esac
    at=$(date -d "@$due" '+%a %Y-%m-%d %H:%M:%S %Z' 2>/dev/null || echo "+$(( (due - now) / 60 )) min")
    echo "$what scheduled for $at, use 'shutdown -c' to cancel." >&2
fi
exit 0
