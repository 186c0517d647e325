#!/usr/bin/env bash
# Prepares the librdkafka we build with: the rdkafka-sys crate (pinned, checksum-verified) with
# third_party/librdkafka/*.patch applied, in third_party/librdkafka/rdkafka-sys (not committed),
# which Cargo.toml's [patch.crates-io] builds instead of the registry's copy. Skipped while the
# prepared copy matches the patches; run by install-deps.sh (so by every script and CI), and
# needed before any cargo command on a fresh clone.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
source "$root/scripts/env.sh"
version="4.10.0+2.12.1"
sha256="e234cf318915c1059d4921ef7f75616b5219b10b46e9f3a511a15eb4b56a3f77"
patches="$root/third_party/librdkafka"
dest="$patches/rdkafka-sys"
key="$(cd "$patches" && { echo "$version"; ls ./*.patch; cat ./*.patch; } | sha256sum | cut -c1-12)"
if [ "$(cat "$dest/.prepared" 2>/dev/null)" = "$key" ]; then
  exit 0
fi
echo "==> preparing rdkafka-sys $version with third_party/librdkafka/*.patch"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
file="$work/rdkafka-sys.crate"
fetch_crate rdkafka-sys "$version" "$file"
echo "$sha256  $file" | sha256sum --check --quiet
tar xzf "$file" -C "$work"
for patch_file in "$patches"/*.patch; do
  echo "    applying $(basename "$patch_file")"
  patch -d "$work/rdkafka-sys-$version" -p1 --quiet < "$patch_file"
done
echo "$key" > "$work/rdkafka-sys-$version/.prepared"
rm -rf "$dest"
mv "$work/rdkafka-sys-$version" "$dest"
