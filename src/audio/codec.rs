//! Audio conversion for speech: decodes what users upload (WAV, MP3, SILK v3, AMR-NB, Ogg or WebM
//! with Opus or Vorbis, raw PCM) to 16 kHz mono 16-bit PCM for speech recognition, and encodes
//! synthesised speech to what chat platforms take (MP3, SILK, AMR-NB, WAV).
//!
//! The format is decided from the bytes (magic numbers) first; a declared format only fills in
//! when the bytes say nothing (raw PCM, MP3 with leading junk). Everything here is blocking CPU
//! work with no I/O and no subprocess: async callers go through `tokio::task::spawn_blocking`.
//! Decoding is bounded by a caller-given length; errors name the format so the HTTP layer can
//! answer 400 with a useful message ([`CodecError::is_bad_input`]).
//!
//! Libraries: symphonia (MP3, Ogg, WebM, Vorbis, non-16-bit WAV), libopus through
//! symphonia-adapter-libopus (Opus), silk-codec (the Skype SILK SDK), rvoip-codec-core (AMR-NB),
//! mp3lame-encoder (LAME). Resampling and 16-bit WAV reuse [`super::wav`].

use std::borrow::Cow;
use std::fmt;
use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use symphonia::core::audio::GenericAudioBufferRef;
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::codecs::registry::CodecRegistry;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions, ReadOnlySource};
use symphonia::default::codecs::{MpaDecoder, PcmDecoder, VorbisDecoder};
use symphonia::default::formats::{MkvReader, MpaReader, OggReader, WavReader};

use super::wav::{self, Wav, WavError};

/// The sample rate speech recognition gets, and the rate of [`AudioFormat::Pcm16`].
pub const STT_RATE: u32 = 16_000;
/// The rate SILK is encoded at: 24 kHz is what QQ and WeChat clients (and AstrBot) use.
pub const SILK_RATE: u32 = 24_000;
/// AMR-NB is 8 kHz mono by definition.
pub const AMR_RATE: u32 = 8_000;
/// Codec framing (20 ms packets, 1152-sample MP3 frames, encoder padding) may push a file this
/// far past the length limit without it being refused.
const LENGTH_GRACE_MS: u64 = 250;
/// Sample rates outside this range are refused before resampling, which would otherwise allocate
/// in proportion to the ratio.
const RATES: std::ops::RangeInclusive<u32> = 4_000..=192_000;

/// An audio container/codec as far as this module cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioFormat {
    /// RIFF WAVE: 16-bit PCM natively; 8/24/32-bit, float and G.711 through symphonia.
    Wav,
    /// MPEG-1/2/2.5 Layer III.
    Mp3,
    /// SILK v3 (QQ/WeChat voice), with or without Tencent's leading 0x02 byte.
    Silk,
    /// AMR-NB in its RFC 4867 storage format (`#!AMR\n`).
    Amr,
    /// Ogg with Opus or Vorbis (Firefox's MediaRecorder, Telegram voice notes).
    Ogg,
    /// WebM/Matroska with Opus or Vorbis (Chrome's MediaRecorder). Decode only.
    Webm,
    /// Headerless 16-bit little-endian mono PCM at 16 kHz ([`STT_RATE`]). Never sniffed.
    Pcm16,
}

impl AudioFormat {
    pub const ALL: [AudioFormat; 7] = [Self::Wav, Self::Mp3, Self::Silk, Self::Amr, Self::Ogg, Self::Webm, Self::Pcm16];

    /// A format from a short name, a file extension or a MIME type, case-insensitively:
    /// `"mp3"`, `".silk"`, `"audio/mpeg"`, `"audio/ogg; codecs=opus"`, `"opus"`…
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        let name = name.strip_prefix("audio/").unwrap_or(&name);
        let name = name.strip_prefix('.').unwrap_or(name);
        let name = name.strip_prefix("x-").unwrap_or(name);
        Some(match name {
            "wav" | "wave" | "vnd.wave" => Self::Wav,
            "mp3" | "mpeg" | "mpeg3" | "mpga" => Self::Mp3,
            "silk" | "slk" | "sil" => Self::Silk,
            "amr" | "amr-nb" => Self::Amr,
            "ogg" | "oga" | "opus" | "vorbis" => Self::Ogg,
            "webm" | "weba" | "mkv" | "mka" | "matroska" => Self::Webm,
            "pcm" | "pcm16" | "raw" | "s16le" => Self::Pcm16,
            _ => return None,
        })
    }

    /// The short name, as in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Wav => "wav",
            Self::Mp3 => "mp3",
            Self::Silk => "silk",
            Self::Amr => "amr",
            Self::Ogg => "ogg",
            Self::Webm => "webm",
            Self::Pcm16 => "pcm16",
        }
    }

    /// The MIME type, for `data:` URLs and `Content-Type`.
    pub fn mime(self) -> &'static str {
        match self {
            Self::Wav => "audio/wav",
            Self::Mp3 => "audio/mpeg",
            Self::Silk => "audio/silk",
            Self::Amr => "audio/amr",
            Self::Ogg => "audio/ogg",
            Self::Webm => "audio/webm",
            Self::Pcm16 => "audio/pcm",
        }
    }

    /// The usual file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Pcm16 => "pcm",
            other => other.name(),
        }
    }

    /// Whether [`encode`] can produce this format.
    pub fn can_encode(self) -> bool {
        !matches!(self, Self::Ogg | Self::Webm)
    }
}

impl fmt::Display for AudioFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The bytes match no known magic number and no usable format was declared.
    #[error("unrecognised audio format")]
    Unrecognised,
    #[error("corrupt {format} audio: {detail}")]
    Corrupt { format: AudioFormat, detail: String },
    /// Well-formed, but a variant this module does not decode (AMR-WB, multichannel Opus…).
    #[error("unsupported {format} audio: {detail}")]
    Unsupported { format: AudioFormat, detail: String },
    #[error("audio longer than {max_secs} s")]
    TooLong { max_secs: u32 },
    #[error("cannot encode audio to {0}")]
    CannotEncode(AudioFormat),
    /// An encoder refused its input or configuration: a bug or resource problem, not bad input.
    #[error("{format} encoder failed: {detail}")]
    Encoder { format: AudioFormat, detail: String },
}

impl CodecError {
    /// True when the caller's input is at fault (HTTP 400), false for server-side failures.
    pub fn is_bad_input(&self) -> bool {
        !matches!(self, Self::Encoder { .. })
    }

    fn corrupt(format: AudioFormat, detail: impl fmt::Display) -> Self {
        Self::Corrupt { format, detail: detail.to_string() }
    }

    fn unsupported(format: AudioFormat, detail: impl fmt::Display) -> Self {
        Self::Unsupported { format, detail: detail.to_string() }
    }

    fn encoder(format: AudioFormat, detail: impl fmt::Display) -> Self {
        Self::Encoder { format, detail: detail.to_string() }
    }
}

/// Mono 16-bit samples at `rate` Hz.
#[derive(Debug)]
struct Pcm {
    samples: Vec<i16>,
    rate: u32,
}

/// Recognises a format from its magic number. [`AudioFormat::Pcm16`] has none and is never
/// returned; MP3 without an ID3v2 tag counts only as a whole first frame followed by a second
/// frame header (or an ID3v1 tag, or nothing).
pub fn sniff(bytes: &[u8]) -> Option<AudioFormat> {
    if bytes.len() >= 12 && bytes.starts_with(b"RIFF") && &bytes[8..12] == b"WAVE" {
        Some(AudioFormat::Wav)
    } else if bytes.starts_with(b"#!SILK_V3") || bytes.starts_with(b"\x02#!SILK_V3") {
        Some(AudioFormat::Silk)
    } else if bytes.starts_with(b"#!AMR") {
        // Also AMR-WB ("#!AMR-WB\n") and multichannel, so that they get a precise refusal.
        Some(AudioFormat::Amr)
    } else if bytes.starts_with(b"OggS") {
        Some(AudioFormat::Ogg)
    } else if bytes.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        Some(AudioFormat::Webm)
    } else if bytes.starts_with(b"ID3") {
        Some(AudioFormat::Mp3)
    } else {
        // Raw PCM can start with a plausible header by chance; it is unlikely to have a second
        // one exactly a frame later.
        let rest = bytes.get(mp3_frame_len(bytes)?..)?;
        (rest.is_empty() || rest.starts_with(b"TAG") || mp3_frame_len(rest).is_some()).then_some(AudioFormat::Mp3)
    }
}

/// The length of the MPEG Layer III frame whose header starts `b`, if it is a valid one.
fn mp3_frame_len(b: &[u8]) -> Option<usize> {
    let h = b.get(..4)?;
    if h[0] != 0xFF || h[1] & 0xE0 != 0xE0 {
        return None;
    }
    let version = (h[1] >> 3) & 0b11; // 0 = MPEG 2.5, 1 = reserved, 2 = MPEG 2, 3 = MPEG 1
    let layer = (h[1] >> 1) & 0b11; // 1 = Layer III
    let bitrate_index = usize::from(h[2] >> 4);
    let rate_index = usize::from((h[2] >> 2) & 0b11);
    if version == 1 || layer != 1 || bitrate_index == 0 || bitrate_index == 15 || rate_index == 3 {
        return None;
    }
    const MPEG1_KBPS: [usize; 15] = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320];
    const MPEG2_KBPS: [usize; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
    const MPEG1_RATES: [usize; 3] = [44_100, 48_000, 32_000];
    let (kbps, rate, coefficient) = match version {
        3 => (MPEG1_KBPS[bitrate_index], MPEG1_RATES[rate_index], 144),
        2 => (MPEG2_KBPS[bitrate_index], MPEG1_RATES[rate_index] / 2, 72),
        _ => (MPEG2_KBPS[bitrate_index], MPEG1_RATES[rate_index] / 4, 72),
    };
    let padding = usize::from((h[2] >> 1) & 1);
    Some(coefficient * kbps * 1000 / rate + padding)
}

/// Decodes `bytes` to 16 kHz mono 16-bit PCM for speech recognition.
///
/// The format comes from [`sniff`]; `declared` is used only when the bytes have no magic number
/// (raw [`AudioFormat::Pcm16`], MP3 with leading junk). Audio longer than `max_secs` (give or take
/// a quarter second of codec framing) is refused with [`CodecError::TooLong`], without decoding
/// the rest. Blocking CPU work: run it under `spawn_blocking`.
pub fn decode_to_pcm16k(bytes: &[u8], declared: Option<AudioFormat>, max_secs: u32) -> Result<Vec<i16>, CodecError> {
    let pcm = decode_native(bytes, declared, max_secs)?;
    Ok(resample(pcm.samples, pcm.rate, STT_RATE))
}

/// Encodes mono 16-bit PCM at `sample_rate` Hz to `to`, resampling where the format needs it:
/// SILK is written at 24 kHz in the Tencent variant (see [`encode_silk`]), AMR-NB at 8 kHz with
/// the 12.2 kbit/s mode, MP3 at the input rate where LAME takes it (else 24 kHz), WAV at the input
/// rate, [`AudioFormat::Pcm16`] at 16 kHz. Ogg and WebM cannot be encoded. Blocking CPU work.
pub fn encode(pcm: &[i16], sample_rate: u32, to: AudioFormat) -> Result<Vec<u8>, CodecError> {
    if !RATES.contains(&sample_rate) {
        return Err(CodecError::encoder(to, format_args!("unsupported input sample rate {sample_rate} Hz")));
    }
    match to {
        AudioFormat::Wav => Ok(wav::pcm16_to_wav(&wav::samples_to_bytes(pcm), sample_rate, 1)),
        AudioFormat::Pcm16 => Ok(wav::samples_to_bytes(&resample_slice(pcm, sample_rate, STT_RATE))),
        AudioFormat::Mp3 => encode_mp3(pcm, sample_rate),
        AudioFormat::Silk => encode_silk(pcm, sample_rate, true),
        AudioFormat::Amr => encode_amr(pcm, sample_rate),
        AudioFormat::Ogg | AudioFormat::Webm => Err(CodecError::CannotEncode(to)),
    }
}

/// Converts an audio file (typically TTS output: espeak-ng's or OpenAI's WAV, or MP3) to `to`.
/// Input already in `to` is returned as is, unchecked (a WAV with streamed placeholder sizes gets
/// them fixed); anything else is recognised as in [`decode_to_pcm16k`], decoded at its own rate
/// within `max_secs`, mixed to mono and [`encode`]d. Blocking CPU work.
pub fn transcode(
    bytes: &[u8],
    declared: Option<AudioFormat>,
    to: AudioFormat,
    max_secs: u32,
) -> Result<Vec<u8>, CodecError> {
    if !to.can_encode() {
        return Err(CodecError::CannotEncode(to));
    }
    let from = sniff(bytes);
    if from == Some(to) {
        let mut out = bytes.to_vec();
        if to == AudioFormat::Wav {
            wav::fix_header(&mut out);
        }
        return Ok(out);
    }
    let pcm = decode_native(bytes, declared, max_secs)?;
    encode(&pcm.samples, pcm.rate, to)
}

/// Decodes to mono PCM at the source's own rate.
fn decode_native(bytes: &[u8], declared: Option<AudioFormat>, max_secs: u32) -> Result<Pcm, CodecError> {
    let format = sniff(bytes).or(declared).ok_or(CodecError::Unrecognised)?;
    // Third-party decoders meet untrusted bytes here: a panic in one is a corrupt file (400), not
    // a crashed worker.
    let pcm = catch_unwind(AssertUnwindSafe(|| match format {
        AudioFormat::Wav => decode_wav(bytes, max_secs),
        AudioFormat::Pcm16 => decode_pcm16(bytes, max_secs),
        AudioFormat::Silk => decode_silk(bytes, max_secs),
        AudioFormat::Amr => decode_amr(bytes, max_secs),
        AudioFormat::Mp3 | AudioFormat::Ogg | AudioFormat::Webm => decode_symphonia(bytes, format, max_secs),
    }))
    .unwrap_or_else(|_| Err(CodecError::corrupt(format, "the decoder failed on this input")))?;
    check_length(pcm.samples.len(), pcm.rate, max_secs)?;
    Ok(pcm)
}

/// The most frames at `rate` that `max_secs` allows, grace included.
fn frame_limit(rate: u32, max_secs: u32) -> usize {
    let frames = u64::from(rate) * u64::from(max_secs) + u64::from(rate) * LENGTH_GRACE_MS / 1000;
    usize::try_from(frames).unwrap_or(usize::MAX)
}

fn check_length(frames: usize, rate: u32, max_secs: u32) -> Result<(), CodecError> {
    if frames > frame_limit(rate, max_secs) { Err(CodecError::TooLong { max_secs }) } else { Ok(()) }
}

fn resample(samples: Vec<i16>, from: u32, to: u32) -> Vec<i16> {
    if from == to { samples } else { wav::to_mono(&Wav { sample_rate: from, channels: 1, samples }, to) }
}

fn resample_slice(samples: &[i16], from: u32, to: u32) -> Cow<'_, [i16]> {
    if from == to { Cow::Borrowed(samples) } else { Cow::Owned(resample(samples.to_vec(), from, to)) }
}

fn decode_wav(bytes: &[u8], max_secs: u32) -> Result<Pcm, CodecError> {
    match wav::parse(bytes) {
        Ok(w) => {
            let frames = w.samples.len() / usize::from(w.channels.max(1));
            check_length(frames, w.sample_rate, max_secs)?;
            Ok(Pcm { samples: wav::to_mono(&w, w.sample_rate), rate: w.sample_rate })
        }
        // Float, 24-bit, 8-bit, G.711…: symphonia's WAV reader and PCM decoder take those.
        Err(WavError::Unsupported) => decode_symphonia(bytes, AudioFormat::Wav, max_secs),
        Err(e @ WavError::NotWav) => Err(CodecError::corrupt(AudioFormat::Wav, e)),
    }
}

fn decode_pcm16(bytes: &[u8], max_secs: u32) -> Result<Pcm, CodecError> {
    if !bytes.len().is_multiple_of(2) {
        return Err(CodecError::corrupt(AudioFormat::Pcm16, "odd number of bytes for 16-bit samples"));
    }
    check_length(bytes.len() / 2, STT_RATE, max_secs)?;
    let samples = bytes.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
    Ok(Pcm { samples, rate: STT_RATE })
}

/// Skips an ID3v2 tag (symphonia's MP3 reader expects a frame; the tag may contain false syncs).
fn skip_id3v2(bytes: &[u8]) -> &[u8] {
    let Some(h) = bytes.get(..10).filter(|h| h.starts_with(b"ID3")) else {
        return bytes;
    };
    let size = h[6..10].iter().fold(0usize, |acc, b| (acc << 7) | usize::from(b & 0x7F));
    let footer = if h[5] & 0x10 != 0 { 10 } else { 0 };
    bytes.get(10 + size + footer..).unwrap_or_default()
}

fn decode_symphonia(bytes: &[u8], format: AudioFormat, max_secs: u32) -> Result<Pcm, CodecError> {
    let corrupt = |e: SymphoniaError| symphonia_error(format, e);
    let bytes = if format == AudioFormat::Mp3 { skip_id3v2(bytes) } else { bytes };
    let mut reader = open_reader(bytes, format)?;
    let track = reader.default_track(TrackType::Audio).ok_or_else(|| CodecError::corrupt(format, "no audio track"))?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| CodecError::corrupt(format, "no audio codec parameters"))?
        .clone();
    let mut decoder =
        audio_decoders().make_audio_decoder(&params, &AudioDecoderOptions::default()).map_err(|e| match e {
            SymphoniaError::Unsupported(_) => CodecError::unsupported(format, "codec not supported"),
            e => corrupt(e),
        })?;
    let mut mix = Mixdown::new(format, max_secs);
    loop {
        let packet = match reader.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            // A truncated upload: keep what decoded.
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) if mix.good == 0 => return Err(corrupt(e)),
            Err(_) => break,
        };
        if packet.track_id != track_id {
            continue;
        }
        match decoder.decode(&packet) {
            Ok(audio) => mix.push(&audio)?,
            Err(SymphoniaError::DecodeError(e)) => mix.bad_packet(e),
            Err(e) => return Err(corrupt(e)),
        }
    }
    mix.finish()
}

fn symphonia_error(format: AudioFormat, e: SymphoniaError) -> CodecError {
    match e {
        SymphoniaError::Unsupported(what) => CodecError::unsupported(format, what),
        e => CodecError::corrupt(format, e),
    }
}

/// The container reader for `format`, over an unseekable source on purpose: readers then stream
/// from the start instead of probing the end of the file for a duration, which fails on
/// truncated uploads and is wasted work here.
fn open_reader(bytes: &[u8], format: AudioFormat) -> Result<Box<dyn FormatReader + '_>, CodecError> {
    let corrupt = |e: SymphoniaError| symphonia_error(format, e);
    let source = ReadOnlySource::new(Cursor::new(bytes));
    let source = MediaSourceStream::new(Box::new(source), MediaSourceStreamOptions::default());
    let options = FormatOptions::default();
    Ok(match format {
        AudioFormat::Mp3 => Box::new(MpaReader::try_new(source, options).map_err(corrupt)?),
        AudioFormat::Ogg => Box::new(OggReader::try_new(source, options).map_err(corrupt)?),
        AudioFormat::Webm => Box::new(MkvReader::try_new(source, options).map_err(corrupt)?),
        AudioFormat::Wav => Box::new(WavReader::try_new(source, options).map_err(corrupt)?),
        _ => return Err(CodecError::unsupported(format, "not a symphonia format")),
    })
}

/// The decoders symphonia may pick from: exactly the codecs this module promises.
fn audio_decoders() -> CodecRegistry {
    let mut codecs = CodecRegistry::new();
    codecs.register_audio_decoder::<MpaDecoder>();
    codecs.register_audio_decoder::<VorbisDecoder>();
    codecs.register_audio_decoder::<PcmDecoder>();
    codecs.register_audio_decoder::<symphonia_adapter_libopus::OpusDecoder>();
    codecs
}

/// Decoded packets mixed down to mono 16-bit as they arrive, with the length cap checked after
/// each, and a count of the packets that would not decode.
struct Mixdown {
    format: AudioFormat,
    max_secs: u32,
    mono: Vec<i16>,
    rate: u32,
    interleaved: Vec<f32>,
    good: usize,
    bad: usize,
    first_error: Option<&'static str>,
}

impl Mixdown {
    fn new(format: AudioFormat, max_secs: u32) -> Self {
        Self {
            format,
            max_secs,
            mono: Vec::new(),
            rate: 0,
            interleaved: Vec::new(),
            good: 0,
            bad: 0,
            first_error: None,
        }
    }

    fn push(&mut self, audio: &GenericAudioBufferRef<'_>) -> Result<(), CodecError> {
        self.good += 1;
        let spec = audio.spec();
        let (rate, channels) = (spec.rate(), spec.channels().count().max(1));
        if self.rate == 0 {
            if !RATES.contains(&rate) {
                return Err(CodecError::unsupported(self.format, format_args!("sample rate {rate} Hz")));
            }
            self.rate = rate;
        } else if rate != self.rate {
            return Err(CodecError::unsupported(self.format, "sample rate changes mid-stream"));
        }
        audio.copy_to_vec_interleaved(&mut self.interleaved);
        self.mono.extend(self.interleaved.chunks(channels).map(|frame| {
            let mean = frame.iter().sum::<f32>() / frame.len() as f32;
            (mean * 32_768.0).round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16
        }));
        check_length(self.mono.len(), self.rate, self.max_secs)
    }

    fn bad_packet(&mut self, e: &'static str) {
        self.bad += 1;
        self.first_error.get_or_insert(e);
    }

    fn finish(self) -> Result<Pcm, CodecError> {
        let (good, bad) = (self.good, self.bad);
        // A few bad packets in a long stream are tolerated; mostly garbage is not.
        if good == 0 && bad > 0 || bad > 8 && bad > good {
            let first = self.first_error.unwrap_or("malformed stream");
            return Err(CodecError::corrupt(self.format, format_args!("{bad} undecodable packets: {first}")));
        }
        if self.rate == 0 {
            return Err(CodecError::corrupt(self.format, "no audio"));
        }
        Ok(Pcm { samples: self.mono, rate: self.rate })
    }
}

/// The two SILK v3 header forms: QQ/WeChat prefix the Skype SDK's `#!SILK_V3` with 0x02 and end
/// without the SDK's 0xFFFF end marker.
const SILK_MAGIC: &[u8] = b"#!SILK_V3";

fn decode_silk(bytes: &[u8], max_secs: u32) -> Result<Pcm, CodecError> {
    let format = AudioFormat::Silk;
    let body = bytes.strip_prefix(b"\x02").unwrap_or(bytes);
    let mut rest = body.strip_prefix(SILK_MAGIC).ok_or_else(|| CodecError::corrupt(format, "no #!SILK_V3 header"))?;
    // Count packets (each at least 20 ms) before decoding, so a long file is refused cheaply and
    // a file of tiny packets cannot decode to unbounded memory.
    let mut packets = 0usize;
    while let Some(len) = rest.get(..2).map(|b| i16::from_le_bytes([b[0], b[1]])) {
        if len == -1 {
            break;
        }
        let len = usize::try_from(len).map_err(|_| CodecError::corrupt(format, "negative packet length"))?;
        rest = rest.get(2 + len..).ok_or_else(|| CodecError::corrupt(format, "truncated packet"))?;
        packets += 1;
        check_length(packets * 20, 1000, max_secs)?;
    }
    if packets == 0 {
        return Err(CodecError::corrupt(format, "no audio packets"));
    }
    let mut decoder = silk_codec::SilkCoder::builder()
        .decoder()
        .output_sample_rate(STT_RATE as i32)
        .build()
        .map_err(|e| CodecError::encoder(format, e))?;
    let samples = decoder.decode(bytes).map_err(|e| CodecError::corrupt(format, e))?;
    Ok(Pcm { samples, rate: STT_RATE })
}

/// SILK v3 at [`SILK_RATE`], 24 kbit/s; the tail is padded to a whole 20 ms frame.
///
/// `tencent` writes the QQ/WeChat form (0x02 before `#!SILK_V3`, no end marker): what QQ and
/// WeChat send and expect, and what [`encode`] produces. `false` writes the Skype SDK's form.
pub fn encode_silk(pcm: &[i16], sample_rate: u32, tencent: bool) -> Result<Vec<u8>, CodecError> {
    let format = AudioFormat::Silk;
    let pcm = resample_slice(pcm, sample_rate, SILK_RATE);
    let mut encoder = silk_codec::SilkCoder::builder()
        .encoder()
        .sample_rate(SILK_RATE as i32)
        .bit_rate(24_000)
        .tail_policy(silk_codec::TailPolicy::PadWithSilence)
        .build()
        .map_err(|e| CodecError::encoder(format, e))?;
    encoder.encode(&pcm, tencent).map_err(|e| CodecError::encoder(format, e))
}

fn decode_amr(bytes: &[u8], max_secs: u32) -> Result<Pcm, CodecError> {
    use codec_core::VariableRateCodec;
    use codec_core::codecs::amr::{AmrCodec, AmrFrameType, AmrStorageReader, AmrVariant};
    use codec_core::types::{CodecConfig, CodedFrame};

    let format = AudioFormat::Amr;
    let mut reader = AmrStorageReader::new(bytes).map_err(|e| {
        // A "#!AMR" magic that the reader refuses is a multichannel file: valid, not ours.
        if bytes.starts_with(b"#!AMR") { CodecError::unsupported(format, e) } else { CodecError::corrupt(format, e) }
    })?;
    if reader.variant() != AmrVariant::NarrowBand {
        return Err(CodecError::unsupported(format, "AMR-WB (only AMR-NB is decoded)"));
    }
    let mut codec = AmrCodec::new(&CodecConfig::amr_nb()).map_err(|e| CodecError::encoder(format, e))?;
    let mut samples = Vec::new();
    while let Some(frame) = reader.next_frame().map_err(|e| CodecError::corrupt(format, e))? {
        let coded = match frame.frame_type {
            AmrFrameType::Speech(mode) => CodedFrame::speech(mode.index(), frame.data),
            AmrFrameType::Sid(_) => CodedFrame::comfort_noise(frame.data),
            AmrFrameType::NoData => CodedFrame::no_data(),
            AmrFrameType::SpeechLost => CodedFrame::lost(),
        };
        let coded = if frame.quality_ok { coded } else { coded.with_bad_quality() };
        samples.extend(codec.decode_frame(&coded).map_err(|e| CodecError::corrupt(format, e))?);
        check_length(samples.len(), AMR_RATE, max_secs)?;
    }
    if samples.is_empty() {
        return Err(CodecError::corrupt(format, "no audio frames"));
    }
    Ok(Pcm { samples, rate: AMR_RATE })
}

/// AMR-NB at 12.2 kbit/s in the RFC 4867 storage format; the tail is padded to a 20 ms frame.
fn encode_amr(pcm: &[i16], sample_rate: u32) -> Result<Vec<u8>, CodecError> {
    use codec_core::VariableRateCodec;
    use codec_core::codecs::amr::{AmrCodec, AmrFrameType, AmrMode, AmrPayloadFrame, AmrVariant, storage};
    use codec_core::types::{CodecConfig, FrameKind};

    let format = AudioFormat::Amr;
    let err = |e: codec_core::CodecError| CodecError::encoder(format, e);
    let mut pcm = resample_slice(pcm, sample_rate, AMR_RATE).into_owned();
    let frame_len = AmrVariant::NarrowBand.frame_samples();
    pcm.resize(pcm.len().div_ceil(frame_len) * frame_len, 0);
    let mut codec = AmrCodec::new(&CodecConfig::amr_nb()).map_err(err)?;
    let mut frames = Vec::with_capacity(pcm.len() / frame_len);
    for chunk in pcm.chunks_exact(frame_len) {
        let coded = codec.encode_frame(chunk).map_err(err)?;
        let frame_type = match coded.kind {
            FrameKind::Speech => AmrFrameType::Speech(AmrMode::new(AmrVariant::NarrowBand, coded.mode).map_err(err)?),
            FrameKind::ComfortNoise => AmrFrameType::Sid(AmrVariant::NarrowBand),
            FrameKind::NoData | FrameKind::Lost => AmrFrameType::NoData,
        };
        frames.push(AmrPayloadFrame::new(frame_type, true, coded.data).map_err(err)?);
    }
    storage::write(AmrVariant::NarrowBand, &frames).map_err(err)
}

/// Sample rates LAME encodes without resampling.
const LAME_RATES: [u32; 9] = [8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000];

/// Constant-bitrate mono MP3: 64 kbit/s from 16 kHz up, 32 kbit/s below.
fn encode_mp3(pcm: &[i16], sample_rate: u32) -> Result<Vec<u8>, CodecError> {
    use mp3lame_encoder::{Bitrate, Builder, FlushNoGap, Mode, MonoPcm, Quality, max_required_buffer_size};

    let format = AudioFormat::Mp3;
    let err = |e: &dyn fmt::Display| CodecError::encoder(format, e);
    let rate = if LAME_RATES.contains(&sample_rate) { sample_rate } else { 24_000 };
    let pcm = resample_slice(pcm, sample_rate, rate);
    let mut builder = Builder::new().ok_or_else(|| err(&"LAME could not allocate an encoder"))?;
    builder.set_num_channels(1).map_err(|e| err(&e))?;
    builder.set_sample_rate(rate).map_err(|e| err(&e))?;
    builder.set_brate(if rate >= 16_000 { Bitrate::Kbps64 } else { Bitrate::Kbps32 }).map_err(|e| err(&e))?;
    builder.set_mode(Mode::Mono).map_err(|e| err(&e))?;
    builder.set_quality(Quality::Good).map_err(|e| err(&e))?;
    let mut encoder = builder.build().map_err(|e| err(&e))?;
    let mut out = Vec::with_capacity(max_required_buffer_size(pcm.len()) + 7200);
    encoder.encode_to_vec(MonoPcm(&pcm), &mut out).map_err(|e| err(&e))?;
    encoder.flush_to_vec::<FlushNoGap>(&mut out).map_err(|e| err(&e))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO_WAV: &[u8] = include_bytes!("testdata/hello-16k.wav");
    const HELLO_MP3: &[u8] = include_bytes!("testdata/hello.mp3");
    const HELLO_OPUS_OGG: &[u8] = include_bytes!("testdata/hello-opus.ogg");
    const HELLO_OPUS_WEBM: &[u8] = include_bytes!("testdata/hello-opus.webm");
    const HELLO_VORBIS_OGG: &[u8] = include_bytes!("testdata/hello-vorbis.ogg");
    const HELLO_AMR: &[u8] = include_bytes!("testdata/hello.amr");
    const HELLO_TENCENT_SILK: &[u8] = include_bytes!("testdata/hello-tencent.silk");
    const HELLO_SKYPE_SILK: &[u8] = include_bytes!("testdata/hello-skype.silk");

    /// A speech-like test signal: a 200 Hz tone with harmonics whose loudness swells and fades
    /// four times a second, so its envelope can be compared after lossy codecs.
    fn voice(rate: u32, secs: f32) -> Vec<i16> {
        let n = (rate as f32 * secs) as usize;
        (0..n)
            .map(|i| {
                let t = i as f32 / rate as f32;
                let tone: f32 = [(200.0, 1.0), (400.0, 0.5), (600.0, 0.3), (1200.0, 0.2)]
                    .iter()
                    .map(|(f, a)| a * (2.0 * std::f32::consts::PI * f * t).sin())
                    .sum();
                let envelope = 0.5 - 0.5 * (2.0 * std::f32::consts::PI * 2.0 * t).cos();
                (tone * envelope * 9_000.0) as i16
            })
            .collect()
    }

    /// RMS per 20 ms at `rate`.
    fn envelope(samples: &[i16], rate: u32) -> Vec<f32> {
        samples
            .chunks((rate / 50) as usize)
            .map(|c| (c.iter().map(|s| f32::from(*s).powi(2)).sum::<f32>() / c.len() as f32).sqrt())
            .collect()
    }

    /// The best Pearson correlation of the two envelopes over lags of up to ±100 ms (codec delay).
    fn envelope_similarity(a: &[i16], b: &[i16], rate: u32) -> f32 {
        let (ea, eb) = (envelope(a, rate), envelope(b, rate));
        (-5i32..=5)
            .map(|lag| {
                let pairs: Vec<(f32, f32)> = (0..ea.len())
                    .filter_map(|i| {
                        let j = usize::try_from(i as i32 + lag).ok()?;
                        Some((ea[i], *eb.get(j)?))
                    })
                    .collect();
                let n = pairs.len() as f32;
                let (ma, mb) = (pairs.iter().map(|p| p.0).sum::<f32>() / n, pairs.iter().map(|p| p.1).sum::<f32>() / n);
                let cov: f32 = pairs.iter().map(|(x, y)| (x - ma) * (y - mb)).sum();
                let va: f32 = pairs.iter().map(|(x, _)| (x - ma).powi(2)).sum();
                let vb: f32 = pairs.iter().map(|(_, y)| (y - mb).powi(2)).sum();
                cov / (va.sqrt() * vb.sqrt()).max(f32::EPSILON)
            })
            .fold(f32::MIN, f32::max)
    }

    fn hello_reference() -> Vec<i16> {
        let w = wav::parse(HELLO_WAV).unwrap();
        assert_eq!((w.sample_rate, w.channels), (16_000, 1));
        w.samples
    }

    fn secs(samples: &[i16]) -> f32 {
        samples.len() as f32 / STT_RATE as f32
    }

    #[test]
    fn names_mimes_and_extensions() {
        for (name, format) in [
            ("wav", AudioFormat::Wav),
            ("audio/x-wav", AudioFormat::Wav),
            ("MP3", AudioFormat::Mp3),
            ("audio/mpeg", AudioFormat::Mp3),
            (".silk", AudioFormat::Silk),
            ("audio/silk", AudioFormat::Silk),
            ("amr", AudioFormat::Amr),
            ("ogg", AudioFormat::Ogg),
            ("opus", AudioFormat::Ogg),
            ("audio/ogg; codecs=opus", AudioFormat::Ogg),
            ("audio/webm;codecs=opus", AudioFormat::Webm),
            ("pcm", AudioFormat::Pcm16),
        ] {
            assert_eq!(AudioFormat::from_name(name), Some(format), "{name}");
        }
        assert_eq!(AudioFormat::from_name("flac"), None);
        for format in AudioFormat::ALL {
            assert_eq!(AudioFormat::from_name(format.name()), Some(format));
            assert_eq!(AudioFormat::from_name(format.extension()), Some(format));
            assert_eq!(AudioFormat::from_name(format.mime()), Some(format));
        }
        assert_eq!(AudioFormat::Mp3.mime(), "audio/mpeg");
        assert_eq!(AudioFormat::Silk.mime(), "audio/silk");
        assert_eq!(AudioFormat::Amr.to_string(), "amr");
    }

    #[test]
    fn sniffs_magic_numbers() {
        assert_eq!(sniff(HELLO_WAV), Some(AudioFormat::Wav));
        assert_eq!(sniff(HELLO_MP3), Some(AudioFormat::Mp3), "with an ID3v2 tag");
        assert_eq!(sniff(skip_id3v2(HELLO_MP3)), Some(AudioFormat::Mp3), "bare frames");
        assert_eq!(sniff(HELLO_OPUS_OGG), Some(AudioFormat::Ogg));
        assert_eq!(sniff(HELLO_VORBIS_OGG), Some(AudioFormat::Ogg));
        assert_eq!(sniff(HELLO_OPUS_WEBM), Some(AudioFormat::Webm));
        assert_eq!(sniff(HELLO_AMR), Some(AudioFormat::Amr));
        assert_eq!(sniff(HELLO_TENCENT_SILK), Some(AudioFormat::Silk));
        assert_eq!(sniff(HELLO_SKYPE_SILK), Some(AudioFormat::Silk));
        assert_eq!(sniff(b""), None);
        assert_eq!(sniff(b"hello world"), None);
        // One plausible MP3 header followed by something else is raw PCM, not MP3.
        let mut pcm = vec![0u8; 1000];
        pcm[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
        assert_eq!(sniff(&pcm), None);
        assert_eq!(sniff(&pcm[..100]), None, "shorter than the frame its header announces");
        assert_eq!(sniff(&pcm[..417]), Some(AudioFormat::Mp3), "exactly one 128 kbit/s frame");
        let silence = wav::samples_to_bytes(&[0i16; 1600]);
        assert_eq!(sniff(&silence), None);
    }

    #[test]
    fn decodes_files_made_by_other_tools() {
        let reference = hello_reference();
        for (name, bytes, min_similarity) in [
            ("wav", HELLO_WAV, 0.999),
            ("mp3 (LAME via ffmpeg)", HELLO_MP3, 0.95),
            ("ogg/opus (ffmpeg)", HELLO_OPUS_OGG, 0.95),
            ("webm/opus, unknown-size clusters (ffmpeg to a pipe)", HELLO_OPUS_WEBM, 0.95),
            ("ogg/vorbis (ffmpeg)", HELLO_VORBIS_OGG, 0.95),
            ("amr-nb (sox, opencore)", HELLO_AMR, 0.9),
            ("silk, tencent header (pysilk, 24 kHz)", HELLO_TENCENT_SILK, 0.9),
            ("silk, skype header + end marker (pilk, 16 kHz)", HELLO_SKYPE_SILK, 0.9),
        ] {
            let pcm = decode_to_pcm16k(bytes, None, 60).unwrap_or_else(|e| panic!("{name}: {e}"));
            let (got, want) = (secs(&pcm), secs(&reference));
            assert!((got - want).abs() < 0.1, "{name}: {got} s decoded, {want} s expected");
            let similarity = envelope_similarity(&reference, &pcm, STT_RATE);
            assert!(similarity > min_similarity, "{name}: envelope similarity {similarity}");
        }
    }

    #[test]
    fn webm_with_unknown_size_clusters() {
        // Chrome's MediaRecorder streams its clusters with the size "unknown"; ffmpeg writes them
        // with sizes. Rewrite each cluster's 2-byte size as the 2-byte "unknown" (0x7FFF).
        let mut webm = HELLO_OPUS_WEBM.to_vec();
        let mut clusters = 0;
        for i in 0..webm.len() - 6 {
            if webm[i..i + 4] == [0x1F, 0x43, 0xB6, 0x75] {
                assert_eq!(webm[i + 4] & 0xC0, 0x40, "a 2-byte size");
                webm[i + 4..i + 6].copy_from_slice(&[0x7F, 0xFF]);
                clusters += 1;
            }
        }
        assert!(clusters >= 2);
        let pcm = decode_to_pcm16k(&webm, None, 60).unwrap();
        assert!((secs(&pcm) - secs(&hello_reference())).abs() < 0.1, "{} s", secs(&pcm));
    }

    #[test]
    fn bytes_beat_the_declared_format() {
        let pcm = decode_to_pcm16k(HELLO_MP3, Some(AudioFormat::Wav), 60).unwrap();
        assert!((secs(&pcm) - 1.6).abs() < 0.1);
        // Raw PCM has no magic: the declaration decides.
        let raw = wav::samples_to_bytes(&voice(16_000, 0.5));
        assert_eq!(decode_to_pcm16k(&raw, Some(AudioFormat::Pcm16), 60).unwrap().len(), 8000);
        assert_eq!(decode_to_pcm16k(&raw, None, 60), Err(CodecError::Unrecognised));
    }

    #[test]
    fn round_trips_through_every_encodable_format() {
        for rate in [16_000, 22_050, 24_000] {
            let input = voice(rate, 1.5);
            let at_16k = resample(input.clone(), rate, STT_RATE);
            for (format, magic, min_similarity) in [
                (AudioFormat::Wav, &b"RIFF"[..], 0.999),
                (AudioFormat::Mp3, &[0xFF][..], 0.95),
                (AudioFormat::Silk, &b"\x02#!SILK_V3"[..], 0.9),
                (AudioFormat::Amr, &b"#!AMR\n"[..], 0.9),
                (AudioFormat::Pcm16, &[][..], 0.999),
            ] {
                let encoded = encode(&input, rate, format).unwrap_or_else(|e| panic!("{format} at {rate}: {e}"));
                assert!(encoded.starts_with(magic), "{format} at {rate} starts {:02x?}", &encoded[..8]);
                if format != AudioFormat::Pcm16 {
                    assert_eq!(sniff(&encoded), Some(format), "{format} at {rate}");
                }
                let decoded = decode_to_pcm16k(&encoded, Some(format), 60).unwrap();
                let (got, want) = (secs(&decoded), 1.5);
                assert!((got - want).abs() < 0.1, "{format} at {rate}: {got} s decoded");
                let similarity = envelope_similarity(&at_16k, &decoded, STT_RATE);
                assert!(similarity > min_similarity, "{format} at {rate}: envelope similarity {similarity}");
            }
        }
    }

    #[test]
    fn silk_in_both_header_forms() {
        let input = voice(24_000, 1.0);
        let tencent = encode_silk(&input, 24_000, true).unwrap();
        let skype = encode_silk(&input, 24_000, false).unwrap();
        assert!(tencent.starts_with(b"\x02#!SILK_V3") && !tencent.ends_with(&[0xFF, 0xFF]));
        assert!(skype.starts_with(b"#!SILK_V3") && skype.ends_with(&[0xFF, 0xFF]));
        assert_eq!(encode(&input, 24_000, AudioFormat::Silk).unwrap(), tencent);
        for file in [tencent, skype] {
            assert!((secs(&decode_to_pcm16k(&file, None, 60).unwrap()) - 1.0).abs() < 0.05);
        }
    }

    #[test]
    fn transcodes_tts_wav() {
        // espeak-ng --stdout writes placeholder sizes; OpenAI TTS writes 24 kHz.
        let mut streamed = wav::pcm16_to_wav(&wav::samples_to_bytes(&voice(22_050, 1.0)), 22_050, 1);
        streamed[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        streamed[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        let silk = transcode(&streamed, Some(AudioFormat::Wav), AudioFormat::Silk, 60).unwrap();
        assert!(silk.starts_with(b"\x02#!SILK_V3"));
        let amr = transcode(&streamed, None, AudioFormat::Amr, 60).unwrap();
        assert!(amr.starts_with(b"#!AMR\n"));
        let mp3 = transcode(&streamed, None, AudioFormat::Mp3, 60).unwrap();
        assert_eq!(sniff(&mp3), Some(AudioFormat::Mp3));
        let same = transcode(&streamed, None, AudioFormat::Wav, 60).unwrap();
        assert_eq!(wav::parse(&same).unwrap().samples.len(), 22_050);
        assert_eq!(u32::from_le_bytes([same[40], same[41], same[42], same[43]]), 44_100, "sizes fixed");
        assert_eq!(transcode(HELLO_MP3, None, AudioFormat::Mp3, 60).unwrap(), HELLO_MP3, "no re-encoding");
        assert!(transcode(HELLO_MP3, None, AudioFormat::Silk, 60).unwrap().starts_with(b"\x02#!SILK_V3"));
        assert_eq!(transcode(HELLO_WAV, None, AudioFormat::Ogg, 60), Err(CodecError::CannotEncode(AudioFormat::Ogg)));
    }

    /// A WAV of 32-bit float samples (format tag 3), which the 16-bit reader refuses.
    fn float_wav(samples: &[f32], rate: u32) -> Vec<u8> {
        let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&3u16.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&rate.to_le_bytes());
        out.extend_from_slice(&(rate * 4).to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&32u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&data);
        out
    }

    #[test]
    fn float_and_stereo_wavs() {
        let input = voice(48_000, 0.5);
        let floats: Vec<f32> = input.iter().map(|s| f32::from(*s) / 32_768.0).collect();
        let pcm = decode_to_pcm16k(&float_wav(&floats, 48_000), None, 60).unwrap();
        assert_eq!(pcm.len(), 8000);
        assert!(envelope_similarity(&resample(input.clone(), 48_000, STT_RATE), &pcm, STT_RATE) > 0.999);
        let stereo: Vec<i16> = input.iter().flat_map(|s| [*s, *s]).collect();
        let pcm = decode_to_pcm16k(&wav::pcm16_to_wav(&wav::samples_to_bytes(&stereo), 48_000, 2), None, 60).unwrap();
        assert_eq!(pcm.len(), 8000);
    }

    #[test]
    fn length_cap() {
        let three_secs = voice(16_000, 3.0);
        for format in [AudioFormat::Wav, AudioFormat::Mp3, AudioFormat::Silk, AudioFormat::Amr, AudioFormat::Pcm16] {
            let encoded = encode(&three_secs, 16_000, format).unwrap();
            assert_eq!(
                decode_to_pcm16k(&encoded, Some(format), 2),
                Err(CodecError::TooLong { max_secs: 2 }),
                "{format}"
            );
            assert!(decode_to_pcm16k(&encoded, Some(format), 3).is_ok(), "{format}: exactly at the limit");
        }
        for bytes in [HELLO_OPUS_OGG, HELLO_OPUS_WEBM, HELLO_VORBIS_OGG] {
            assert_eq!(decode_to_pcm16k(bytes, None, 1), Err(CodecError::TooLong { max_secs: 1 }));
        }
        assert_eq!(CodecError::TooLong { max_secs: 60 }.to_string(), "audio longer than 60 s");
    }

    #[test]
    fn corrupt_input_names_its_format() {
        let cases: [(&[u8], Option<AudioFormat>, AudioFormat); 9] = [
            (b"RIFF\x10\0\0\0WAVEjunkjunk", None, AudioFormat::Wav),
            (b"#!SILK_V3\x05\0ab", None, AudioFormat::Silk),
            (b"\x02#!SILK_V3", None, AudioFormat::Silk),
            (b"#!AMR\n\x3c\x01\x02", None, AudioFormat::Amr),
            (b"OggS\0\x02garbage-garbage-garbage", None, AudioFormat::Ogg),
            (&[0x1A, 0x45, 0xDF, 0xA3, 0x80, 1, 2, 3], None, AudioFormat::Webm),
            (b"ID3\x04\0\0\0\0\0\x05hello not an mp3 at all", None, AudioFormat::Mp3),
            (b"not a silk file", Some(AudioFormat::Silk), AudioFormat::Silk),
            (b"\x01\x02\x03", Some(AudioFormat::Pcm16), AudioFormat::Pcm16),
        ];
        for (bytes, declared, format) in cases {
            let e = decode_to_pcm16k(bytes, declared, 60).unwrap_err();
            assert!(e.is_bad_input(), "{e}");
            assert!(
                matches!(&e, CodecError::Corrupt { format: f, .. } | CodecError::Unsupported { format: f, .. } if *f == format),
                "{format}: {e:?}"
            );
            assert!(e.to_string().contains(&format!("{format} audio: ")), "{e}");
        }
        let mut truncated = HELLO_AMR[..HELLO_AMR.len() - 5].to_vec();
        truncated.extend_from_slice(b"\x3c\x01");
        assert!(matches!(
            decode_to_pcm16k(&truncated, None, 60),
            Err(CodecError::Corrupt { format: AudioFormat::Amr, .. })
        ));
        let wideband = b"#!AMR-WB\n\x0c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00";
        assert!(matches!(
            decode_to_pcm16k(wideband, None, 60),
            Err(CodecError::Unsupported { format: AudioFormat::Amr, .. })
        ));
    }

    #[test]
    fn truncated_uploads_keep_what_decoded() {
        // ffmpeg writes Ogg pages of up to a second and symphonia needs the first audio page
        // whole: cut into the last page.
        for bytes in [HELLO_MP3, HELLO_OPUS_OGG, HELLO_OPUS_WEBM, HELLO_VORBIS_OGG] {
            let cut = &bytes[..bytes.len() * 9 / 10];
            let pcm = decode_to_pcm16k(cut, None, 60).unwrap_or_else(|e| panic!("{:?}: {e}", sniff(bytes)));
            assert!(secs(&pcm) > 0.5 && secs(&pcm) < 1.6, "{:?}: {} s", sniff(bytes), secs(&pcm));
        }
        // Nothing decodable at all is still an error.
        let e = decode_to_pcm16k(&HELLO_OPUS_OGG[..200], None, 60).unwrap_err();
        assert!(matches!(e, CodecError::Corrupt { format: AudioFormat::Ogg, .. }), "{e:?}");
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// Garbage after a valid magic number, or mutations of real files, never panic and
            /// never decode to more than the cap.
            #[test]
            fn garbage_is_an_error_or_bounded_audio(
                which in 0usize..8,
                tail in proptest::collection::vec(any::<u8>(), 0..2000),
                flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..16),
            ) {
                let files: [&[u8]; 8] = [
                    HELLO_WAV, HELLO_MP3, HELLO_OPUS_OGG, HELLO_OPUS_WEBM, HELLO_VORBIS_OGG, HELLO_AMR,
                    HELLO_TENCENT_SILK, HELLO_SKYPE_SILK,
                ];
                let magics: [&[u8]; 8] = [b"RIFF\0\0\0\0WAVE", b"ID3", b"OggS", &[0x1A, 0x45, 0xDF, 0xA3], b"#!AMR\n",
                    b"#!SILK_V3", b"\x02#!SILK_V3", &[0xFF, 0xFB, 0x90, 0x64]];
                let mut mutated = files[which].to_vec();
                for (index, byte) in &flips {
                    let i = index.index(mutated.len());
                    mutated[i] ^= byte;
                }
                let garbage = [magics[which], &tail].concat();
                for bytes in [mutated, garbage] {
                    if let Ok(pcm) = decode_to_pcm16k(&bytes, None, 3) {
                        prop_assert!(pcm.len() <= frame_limit(STT_RATE, 3) + 1);
                    }
                }
            }
        }
    }
}
