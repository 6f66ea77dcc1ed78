#!/usr/bin/env bash
# Downloads a real instruct model for the local backend into ./models/ (which `wye serve`
# searches first). Default: SmolLM2-360M-Instruct, Q8_0 GGUF (386 MB), from the
# bartowski/SmolLM2-360M-Instruct-GGUF repository on Hugging Face, pinned to the revision whose
# published SHA-256 is checked below. Resumes a partial download (curl -C -).
#
#   bash deploy/download-model.sh            # the default model
#   WYE_MODEL_URL=... WYE_MODEL_SHA256=... WYE_MODEL_FILE=name.gguf bash deploy/download-model.sh
set -euo pipefail
cd "$(dirname "$0")/.."

repo=bartowski/SmolLM2-360M-Instruct-GGUF
rev=617c6f7a3265cd6251e7b846bd3962594035a512
file=${WYE_MODEL_FILE:-SmolLM2-360M-Instruct-Q8_0.gguf}
url=${WYE_MODEL_URL:-https://huggingface.co/$repo/resolve/$rev/$file}
if [ -n "${WYE_MODEL_URL:-}" ]; then
  sha=${WYE_MODEL_SHA256:-}
else
  sha=${WYE_MODEL_SHA256:-c004ac34cce45e03e4452bca472535bc371fcb0d07ae560bba2c57ce4a284b7b}
fi
dir=${WYE_MODELS_DIR:-models}
out=$dir/$file

die() { echo "download-model: $*" >&2; exit 1; }
command -v curl >/dev/null || die "curl is not installed (sudo apt-get install curl)"

check() {
  [ -n "$sha" ] || { echo "download-model: no SHA-256 given for $1; not verified" >&2; return 0; }
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  [ "$got" = "$sha" ]
}

mkdir -p "$dir"
if [ -f "$out" ] && check "$out"; then
  echo "download-model: $out is already here and verified"
  exit 0
fi

host=$(printf '%s\n' "$url" | sed -E 's#^[a-z]+://([^/:]+).*#\1#')
if ! probe=$(curl -sS -I -L --max-time 20 -o /dev/null "$url" 2>&1); then
  die "cannot reach $host: ${probe:-no answer}"
fi

echo "download-model: $url -> $out"
tmp=$out.part
curl -fL --retry 3 --retry-delay 2 -C - -o "$tmp" "$url" ||
  die "download of $url failed (partial file kept in $tmp; run again to resume)"
if ! check "$tmp"; then
  rm -f "$tmp"
  die "$file: SHA-256 mismatch (expected $sha); the partial file was removed, run again"
fi
mv "$tmp" "$out"
echo "download-model: $out ready; 'wye serve' picks the first models/*.gguf by name"
