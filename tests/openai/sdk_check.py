"""The official `openai` Python SDK against a running astrgate (driven by tests/api/openai_sdk.rs).

Usage: sdk_check.py BASE_URL API_KEY
The app has a provider `fake` (a fake OpenAI upstream that echoes the last user message), the
profile `default`, and the offline STT/TTS defaults (espeak-ng speaks, pocketsphinx listens).
Every check asserts; the last line printed is a JSON summary the Rust test reads.
"""

import io
import json
import sys

import openai
from openai import OpenAI

base, key = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=60)
summary = {"sdk_version": openai.__version__}

# models.list
ids = [m.id for m in client.models.list()]
assert "default" in ids and "fake/fake-model" in ids, ids
assert all(m.owned_by == "fake" for m in client.models.list()), ids
summary["models"] = ids

# Streaming chat with usage.
stream = client.chat.completions.create(
    model="default",
    messages=[{"role": "user", "content": "streamed from the sdk"}],
    stream=True,
    stream_options={"include_usage": True},
    temperature=0.3,
)
text, usage, ids_seen, finish = "", None, set(), None
for chunk in stream:
    ids_seen.add(chunk.id)
    if chunk.usage is not None:
        usage = chunk.usage
        assert chunk.choices == [], chunk
        continue
    delta = chunk.choices[0].delta
    text += delta.content or ""
    finish = chunk.choices[0].finish_reason or finish
assert text == "Echo: streamed from the sdk", text
assert len(ids_seen) == 1, ids_seen
assert finish == "stop", finish
assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0, usage
summary["stream"] = {"text": text, "completion_tokens": usage.completion_tokens}

# Non-streaming chat.
done = client.chat.completions.create(
    model="fake/fake-model", messages=[{"role": "user", "content": "whole from the sdk"}], max_tokens=32
)
assert done.object == "chat.completion", done
assert done.choices[0].message.content == "Echo: whole from the sdk", done
assert done.choices[0].finish_reason == "stop"
assert done.usage.total_tokens > 0
summary["whole"] = done.choices[0].message.content

# An audio round trip: speech (espeak-ng) → transcription (pocketsphinx).
speech = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello world.", response_format="wav")
audio = speech.read()
assert audio[:4] == b"RIFF" and audio[8:12] == b"WAVE", audio[:16]
heard = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", io.BytesIO(audio), "audio/wav"))
words = heard.text.lower().replace(".", " ").split()
assert "hello" in words or "world" in words, heard.text
mp3 = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello world.").read()
assert mp3[:3] == b"ID3" or (mp3[0] == 0xFF and mp3[1] & 0xE0 == 0xE0), mp3[:8]
as_text = client.audio.transcriptions.create(
    model="whisper-1", file=("speech.mp3", io.BytesIO(mp3), "audio/mpeg"), response_format="text"
)
assert isinstance(as_text, str), type(as_text)
summary["heard"] = heard.text
summary["heard_mp3"] = as_text.strip()

# Errors as the SDK's exception classes.
try:
    OpenAI(base_url=f"{base}/v1", api_key="abk_" + "x" * 43, max_retries=0).models.list()
    raise AssertionError("a bad key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401 and e.code == "invalid_api_key", (e.status_code, e.code)
try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    raise AssertionError("an unknown model was accepted")
except openai.NotFoundError as e:
    assert e.status_code == 404 and e.code == "model_not_found", (e.status_code, e.code)
try:
    client.chat.completions.create(model="default", n=2, messages=[{"role": "user", "content": "hi"}])
    raise AssertionError("n = 2 was accepted")
except openai.BadRequestError as e:
    assert e.param == "n", e.param
summary["errors"] = "ok"

print(json.dumps(summary))
