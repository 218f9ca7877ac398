#!/usr/bin/env bash
# Regenerates the audio fixtures of src/audio/codec.rs's tests and tests/api/voice_formats.rs, made
# the way users' clients make them: espeak-ng speech, Debian's ffmpeg (libmp3lame, libopus, libvorbis, libopencore-amrnb) and
# the PyPI SILK encoders (silk-python as `pysilk`, the one AstrBot uses; pilk). Not run by CI.
#   apt-get install espeak-ng ffmpeg sox && python3 -m venv /tmp/silk && /tmp/silk/bin/pip install silk-python pilk
#   PYTHON=/tmp/silk/bin/python src/audio/testdata/make-fixtures.sh
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ff() { ffmpeg -v error -y "$@"; }
out() { echo -map_metadata -1 -fflags +bitexact -flags:a +bitexact; }

# US English "Hello world.", which the offline recogniser (pocketsphinx en-us) hears in every format,
# even through AMR's 8 kHz; padded to 1.6 s (a quarter second before), over a quiet pink-noise floor
# as a microphone has: pocketsphinx mishears speech that starts from digital silence.
espeak-ng -v en-us -w "$tmp/speech.wav" "Hello world."
ff -i "$tmp/speech.wav" -f lavfi -i "anoisesrc=d=1.6:c=pink:r=22050:a=0.002:s=42" \
  -filter_complex "[0]adelay=250,apad=whole_dur=1.6[s];[s][1]amix=inputs=2:duration=first:normalize=0" \
  $(out) -ar 16000 -ac 1 -c:a pcm_s16le hello-16k.wav
ff -i hello-16k.wav $(out) -c:a libmp3lame -b:a 32k hello.mp3
ff -i hello-16k.wav $(out) -c:a libopus -b:a 24k hello-opus.ogg
# Piped, so the clusters have unknown sizes, as in a browser's MediaRecorder output.
ff -i hello-16k.wav $(out) -c:a libopus -b:a 24k -f webm pipe:1 > hello-opus.webm
ff -i hello-16k.wav $(out) -c:a libvorbis -q:a 0 hello-vorbis.ogg
# Debian's ffmpeg decodes AMR but has no AMR encoder; sox does (its libsox-fmt-base links libopencore-amrnb0).
sox hello-16k.wav -r 8000 -C 7 -t amr-nb hello.amr
ff -i hello-16k.wav -ar 24000 -f s16le "$tmp/24k.pcm"
ff -i hello-16k.wav -f s16le "$tmp/16k.pcm"
"$PYTHON" - "$tmp" <<'PY'
import io, sys, pysilk, pilk
tmp = sys.argv[1]
# QQ/WeChat style: 0x02 + "#!SILK_V3", 24 kHz, no end marker (pysilk's default, as AstrBot sends).
out = io.BytesIO()
pysilk.encode(io.BytesIO(open(f"{tmp}/24k.pcm", "rb").read()), out, 24000, 24000, tencent=True)
open("hello-tencent.silk", "wb").write(out.getvalue())
# Skype SDK style: "#!SILK_V3" without 0x02, 16 kHz.
pilk.encode(f"{tmp}/16k.pcm", "hello-skype.silk", pcm_rate=16000, tencent=False)
PY
ls -l
