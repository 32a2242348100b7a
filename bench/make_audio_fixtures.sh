#!/usr/bin/env bash
# Regenerates the audio fixtures read by crates/engine/tests/it/audio.rs.
#
# Needs ffmpeg (with libmp3lame, libvorbis, libopus and the native aac encoder) and openssl;
# CI does not run this: the tests read the committed files. Every file is a 440 Hz sine at
# amplitude 0.5 so one set of checks (frequency, level, duration) covers every format.
# Lengths are short (0.2..1 s) to keep the whole set under 200 KB; the uncompressed high-rate
# WAVs are the shortest because they are the biggest per second.
#
# Random bytes come from AES-CTR over zeros with a fixed key so a rerun gives the same files.
set -euo pipefail

OUT="$(cd "$(dirname "$0")/.." && pwd)/crates/engine/tests/fixtures/audio"
mkdir -p "$OUT"
cd "$OUT"

# / -map_metadata -1: no encoder-version tags, so reruns are byte-identical and the
# WAV header is the plain 44-byte one the header-patching steps below rely on.
enc() { # enc RATE SECONDS CHANNELS OUTPUT CODEC-OPTIONS...
    local rate=$1 secs=$2 ch=$3 out=$4
    shift 4
    ffmpeg -hide_banner -loglevel error -y -f lavfi -i "$(sine "$rate" "$secs" "$ch")" \
        -map_metadata -1 -fflags +bitexact -flags:a +bitexact "$@" "$out"
}
sine() { # sine RATE SECONDS CHANNELS
    local expr="0.5*sin(2*PI*440*t)"
    if [ "$3" = 2 ]; then expr="$expr|$expr"; fi
    echo "aevalsrc=$expr:s=$1:d=$2"
}
random_bytes() { # random_bytes COUNT SEED
    head -c "$1" /dev/zero |
        openssl enc -aes-128-ctr -nosalt -K "$2" -iv 00000000000000000000000000000000
}
# The byte offset just past the 8-byte "data" chunk header of a WAV file.
data_offset() {
    echo $(($(grep -obUaP 'data' "$1" | head -1 | cut -d: -f1) + 8))
}

enc 16000 0.5 1 sine_16k_mono_s16.wav -c:a pcm_s16le
enc 44100 0.2 2 sine_44k1_stereo_s16.wav -c:a pcm_s16le
enc 48000 0.35 1 sine_48k_mono_f32.wav -c:a pcm_f32le
enc 22050 0.5 1 sine_22k05_mono.flac -c:a flac
enc 44100 1 1 sine_44k1_mono.mp3 -c:a libmp3lame -b:a 64k
enc 48000 1 2 sine_48k_stereo.ogg -c:a libvorbis -q:a 2
enc 44100 1 1 sine_44k1_mono.m4a -c:a aac -b:a 64k
enc 48000 1 1 sine_48k.opus.ogg -c:a libopus -b:a 32k

# The first 40% of the MP3's bytes: a download cut short.
size=$(stat -c %s sine_44k1_mono.mp3)
head -c $((size * 40 / 100)) sine_44k1_mono.mp3 >truncated_mp3.mp3

# 0.5 s of 8 kHz audio whose header claims a data chunk of 0xFFFFFFF0 bytes (as a streaming
# writer that never came back to fix the header leaves it): the reader must stop at the real end.
enc 8000 0.5 1 huge_header.wav -c:a pcm_s16le
off=$(data_offset huge_header.wav)
printf '\xf0\xff\xff\xff' | dd of=huge_header.wav bs=1 seek=$((off - 4)) conv=notrunc status=none
printf '\xf0\xff\xff\xff' | dd of=huge_header.wav bs=1 seek=4 conv=notrunc status=none

# A valid header over random sample bytes: any bytes are valid PCM, so this decodes (as noise).
enc 16000 0.1 1 garbled_data.wav -c:a pcm_s16le
off=$(data_offset garbled_data.wav)
size=$(stat -c %s garbled_data.wav)
random_bytes $((size - off)) 00112233445566778899aabbccddeeff |
    dd of=garbled_data.wav bs=1 seek="$off" conv=notrunc status=none

# A well-formed WAV holding no samples at all.
enc 16000 0.1 1 empty_data.wav -t 0 -c:a pcm_s16le

# 4 KB of noise: no container at all.
random_bytes 4096 0f1e2d3c4b5a69788796a5b4c3d2e1f0 >random.bin

ls -l "$OUT"
du -cb "$OUT"/* | tail -1
