#!/usr/bin/env bash
# Builds a minimal root filesystem from Debian's busybox-static: DIR/bin/busybox plus its applets as
# symlinks, /etc/passwd and /etc/group (root, a normal user `app` 1000:1000, nobody), the empty
# mount points the runtime needs, and empty /etc/hostname, hosts and resolv.conf (the runtime binds
# generated files over them, so the rootfs is never written to). Idempotent; needs no network.
#   usage: scripts/make-busybox-rootfs.sh DIR
set -euo pipefail
dir=${1:?usage: make-busybox-rootfs.sh DIR}
busybox=${BUSYBOX:-/bin/busybox}
if ! "$busybox" --list >/dev/null 2>&1; then
  echo "make-busybox-rootfs: $busybox is not busybox (apt-get install busybox-static)" >&2
  exit 1
fi
if ldd "$busybox" >/dev/null 2>&1; then
  echo "make-busybox-rootfs: $busybox is dynamically linked; install busybox-static" >&2
  exit 1
fi
mkdir -p "$dir"/{bin,sbin,etc,proc,sys,dev,tmp,mnt,root,home/app,usr/bin,usr/sbin,var,run}
chmod 1777 "$dir/tmp"
chmod 700 "$dir/root"
install -m 0755 "$busybox" "$dir/bin/busybox"
# What `busybox --install -s DIR/bin` does, but with links to "/bin/busybox" as seen inside the
# rootfs (--install links to the host's resolved path, /usr/bin/busybox on merged-/usr Debian).
for applet in $("$busybox" --list); do
  [[ $applet == busybox ]] && continue
  [[ -e $dir/bin/$applet || -L $dir/bin/$applet ]] || ln -s /bin/busybox "$dir/bin/$applet"
done
cat > "$dir/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/home/app:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
cat > "$dir/etc/group" <<'G'
root:x:0:
tty:x:5:
staff:x:50:app
app:x:1000:
nogroup:x:65534:
G
chown 1000:1000 "$dir/home/app"
for f in hostname hosts resolv.conf; do
  [[ -e $dir/etc/$f ]] || : > "$dir/etc/$f"
done
