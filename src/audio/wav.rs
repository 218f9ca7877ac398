//! PCM ↔ WAV: building a WAV from raw 16-bit PCM (Live uploads), reading 16-bit PCM WAVs
//! (including streamed ones whose header sizes are placeholders, as `espeak-ng --stdout` writes),
//! and converting to 16 kHz mono for speech recognition.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WavError {
    #[error("not a WAV file")]
    NotWav,
    #[error("unsupported WAV encoding (need 16-bit PCM)")]
    Unsupported,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Wav {
    pub sample_rate: u32,
    pub channels: u16,
    /// Interleaved samples.
    pub samples: Vec<i16>,
}

impl Wav {
    pub fn duration_secs(&self) -> f64 {
        if self.sample_rate == 0 || self.channels == 0 {
            return 0.0;
        }
        self.samples.len() as f64 / f64::from(self.sample_rate) / f64::from(self.channels)
    }
}

/// A canonical 44-byte-header WAV around 16-bit little-endian PCM.
pub fn pcm16_to_wav(pcm: &[u8], sample_rate: u32, channels: u16) -> Vec<u8> {
    let data_len = (pcm.len() & !1) as u32;
    let byte_rate = sample_rate * u32::from(channels) * 2;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&byte_rate.to_le_bytes());
    out.extend_from_slice(&(channels * 2).to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    out.extend_from_slice(&pcm[..data_len as usize]);
    out
}

/// Samples as little-endian bytes.
pub fn samples_to_bytes(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    b.get(i..i + 2).map(|s| u16::from_le_bytes([s[0], s[1]]))
}
fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    b.get(i..i + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Reads a 16-bit PCM WAV. Chunk sizes larger than the data present are clamped.
pub fn parse(bytes: &[u8]) -> Result<Wav, WavError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(WavError::NotWav);
    }
    let mut i = 12;
    let mut fmt: Option<(u16, u16, u32, u16)> = None;
    while i + 8 <= bytes.len() {
        let id = &bytes[i..i + 4];
        let size = u32_at(bytes, i + 4).ok_or(WavError::NotWav)? as usize;
        let body = i + 8;
        let end = body.saturating_add(size).min(bytes.len());
        if id == b"fmt " {
            let format = u16_at(bytes, body).ok_or(WavError::NotWav)?;
            let channels = u16_at(bytes, body + 2).ok_or(WavError::NotWav)?;
            let rate = u32_at(bytes, body + 4).ok_or(WavError::NotWav)?;
            let bits = u16_at(bytes, body + 14).ok_or(WavError::NotWav)?;
            fmt = Some((format, channels, rate, bits));
        } else if id == b"data" {
            let (format, channels, sample_rate, bits) = fmt.ok_or(WavError::NotWav)?;
            // 1 = PCM; 0xFFFE = extensible (PCM in practice for 16-bit). Implausible rates and
            // channel counts are refused: resampling a "1 Hz" file would allocate without bound.
            if !(format == 1 || format == 0xFFFE)
                || bits != 16
                || !(1..=8).contains(&channels)
                || !(8_000..=192_000).contains(&sample_rate)
            {
                return Err(WavError::Unsupported);
            }
            let data = &bytes[body..end];
            let samples = data.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect();
            return Ok(Wav { sample_rate, channels, samples });
        }
        i = end + (size & 1);
        if end >= bytes.len() {
            break;
        }
    }
    Err(WavError::NotWav)
}

/// Mono at `rate` Hz: channels averaged, then (when downsampling) a 31-tap windowed-sinc
/// low-pass below the new Nyquist frequency, then linear interpolation. Good enough for speech
/// recognition; a crude average filter measurably hurts pocketsphinx.
pub fn to_mono(w: &Wav, rate: u32) -> Vec<i16> {
    let ch = usize::from(w.channels.max(1));
    let mono: Vec<f32> =
        w.samples.chunks(ch).map(|f| f.iter().map(|s| f32::from(*s)).sum::<f32>() / f.len() as f32).collect();
    if w.sample_rate == rate || mono.is_empty() {
        return mono.iter().map(|s| *s as i16).collect();
    }
    let ratio = f64::from(w.sample_rate) / f64::from(rate);
    let src = if ratio > 1.0 { low_pass(&mono, 0.47 * f64::from(rate) / f64::from(w.sample_rate)) } else { mono };
    let n = (src.len() as f64 / ratio).floor() as usize;
    (0..n)
        .map(|k| {
            let x = k as f64 * ratio;
            let j = x as usize;
            let f = (x - j as f64) as f32;
            let a = src[j.min(src.len() - 1)];
            let b = src[(j + 1).min(src.len() - 1)];
            (a + (b - a) * f).round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16
        })
        .collect()
}

/// A Hamming-windowed sinc FIR low-pass with cutoff `fc` (a fraction of the sample rate).
fn low_pass(x: &[f32], fc: f64) -> Vec<f32> {
    const TAPS: usize = 31;
    let half = (TAPS / 2) as isize;
    let mut h: Vec<f64> = (-half..=half)
        .map(|k| {
            let sinc = if k == 0 {
                2.0 * fc
            } else {
                (2.0 * std::f64::consts::PI * fc * k as f64).sin() / (std::f64::consts::PI * k as f64)
            };
            let window = 0.54 - 0.46 * (2.0 * std::f64::consts::PI * (k + half) as f64 / (TAPS - 1) as f64).cos();
            sinc * window
        })
        .collect();
    let sum: f64 = h.iter().sum();
    h.iter_mut().for_each(|v| *v /= sum);
    let last = x.len() as isize - 1;
    (0..x.len() as isize)
        .map(|i| {
            h.iter().enumerate().map(|(t, c)| *c as f32 * x[(i + t as isize - half).clamp(0, last) as usize]).sum()
        })
        .collect()
}

/// Rewrites the RIFF and data sizes of a WAV to match its bytes (for streamed WAVs).
pub fn fix_header(bytes: &mut [u8]) {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" {
        return;
    }
    let total = (bytes.len() - 8) as u32;
    bytes[4..8].copy_from_slice(&total.to_le_bytes());
    let mut i = 12;
    while i + 8 <= bytes.len() {
        let size = u32_at(bytes, i + 4).unwrap_or(0) as usize;
        if &bytes[i..i + 4] == b"data" {
            let real = (bytes.len() - i - 8) as u32;
            bytes[i + 4..i + 8].copy_from_slice(&real.to_le_bytes());
            return;
        }
        i = i + 8 + size + (size & 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let samples: Vec<i16> = (0..1600).map(|i| ((i as f32 / 10.0).sin() * 10_000.0) as i16).collect();
        let wav = pcm16_to_wav(&samples_to_bytes(&samples), 16_000, 1);
        let w = parse(&wav).unwrap();
        assert_eq!((w.sample_rate, w.channels), (16_000, 1));
        assert_eq!(w.samples, samples);
        assert!((w.duration_secs() - 0.1).abs() < 1e-9);
    }

    #[test]
    fn streamed_headers_and_resampling() {
        let samples = vec![1000i16; 2205];
        let mut wav = pcm16_to_wav(&samples_to_bytes(&samples), 22_050, 1);
        wav[40..44].copy_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
        wav[4..8].copy_from_slice(&0x7FFF_FFFFu32.to_le_bytes());
        let w = parse(&wav).unwrap();
        assert_eq!(w.samples.len(), 2205);
        let m = to_mono(&w, 16_000);
        assert_eq!(m.len(), 1600);
        assert!(m.iter().all(|s| *s == 1000));
        fix_header(&mut wav);
        assert_eq!(u32_at(&wav, 40), Some(4410));
        assert_eq!(parse(b"nope"), Err(WavError::NotWav));
        let bogus = pcm16_to_wav(&[0u8; 64], 1, 1);
        assert_eq!(parse(&bogus), Err(WavError::Unsupported), "a 1 Hz header is refused");
    }
}
