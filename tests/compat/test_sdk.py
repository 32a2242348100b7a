"""The real `xinference-client` SDK and the `openai` SDK against xinference-local with auth on,
unchanged: what an existing Xinference user's scripts do."""
import json

import pytest
from openai import OpenAI
from xinference_client import RESTfulClient as Client

ADMIN_KEY = "sk-72tkvudyGLPMi"  # user1's api key in examples/auth.json


def admin(url):
    client = Client(url)
    client.login("user1", "secret1")
    return client


def test_login_errors_read_well(server):
    with pytest.raises(RuntimeError, match="Incorrect username or password"):
        Client(server).login("user2", "not-the-password")
    reader = Client(server)
    reader.login("user2", "secret2")
    with pytest.raises(RuntimeError, match="Not enough permissions"):
        reader.launch_model(model_name="all-MiniLM-L6-v2", model_type="embedding", model_path="/tmp")


def test_embeddings_through_both_sdks(server, models):
    client = admin(server)
    uid = client.launch_model(model_name="all-MiniLM-L6-v2", model_type="embedding",
                              model_uid="sdk-minilm", model_path=f"{models}/all-MiniLM-L6-v2")
    assert uid == "sdk-minilm"
    reader = Client(server)
    reader.login("user2", "secret2")
    listed = reader.list_models()
    assert listed["sdk-minilm"]["model_type"] == "embedding"
    model = reader.get_model(uid)
    result = model.create_embedding(["Hello world", "xinference-rs"])
    assert len(result["data"]) == 2 and len(result["data"][0]["embedding"]) == 384
    assert result["usage"]["prompt_tokens"] > 4

    openai = OpenAI(base_url=f"{server}/v1", api_key=ADMIN_KEY)
    # The openai SDK asks for base64 by default and decodes it.
    got = openai.embeddings.create(model=uid, input="Hello world").data[0].embedding
    want = model.create_embedding("Hello world")["data"][0]["embedding"]
    assert max(abs(a - b) for a, b in zip(got, want)) < 1e-6
    with pytest.raises(Exception, match="401"):
        OpenAI(base_url=f"{server}/v1", api_key="sk-NotAValidKey1").embeddings.create(model=uid, input="x")

    client.terminate_model(uid)
    assert uid not in client.list_models()


def test_register_launch_rerank_unregister(server, cross_encoder):
    folder, fixture = cross_encoder
    client = admin(server)
    definition = {"model_name": "sdk-cross-encoder", "type": "normal", "language": ["en"], "max_tokens": 512,
                  "model_specs": [{"model_format": "pytorch", "model_uri": folder, "quantization": "none"}]}
    client.register_model(model_type="rerank", model=json.dumps(definition), persist=False)
    names = [r["model_name"] for r in client.list_model_registrations("rerank")]
    assert "sdk-cross-encoder" in names
    uid = client.launch_model(model_name="sdk-cross-encoder", model_type="rerank")
    query = fixture["pairs"][0][0]
    documents = [p[1] for p in fixture["pairs"][:3]]
    result = client.get_model(uid).rerank(documents, query, top_n=2, return_documents=True, return_len=True)
    assert len(result["results"]) == 2
    best = result["results"][0]
    assert abs(best["relevance_score"] - max(fixture["scores"][:3])) < 1e-5
    assert best["document"]["text"] == documents[best["index"]]
    assert result["meta"]["tokens"]["input_tokens"] > 0
    client.terminate_model(uid)
    client.unregister_model(model_type="rerank", model_name="sdk-cross-encoder")
    with pytest.raises(RuntimeError, match="not found"):
        client.get_model_registration("rerank", "sdk-cross-encoder")


def test_chat_through_both_sdks(server, models):
    client = admin(server)
    uid = client.launch_model(model_name="smollm2-instruct", model_engine="llama.cpp", model_format="ggufv2",
                              quantization="Q4_1", model_path=f"{models}/SmolLM2-135M-Instruct.Q4_1.gguf",
                              requantize="F32")
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    reader = Client(server)
    reader.login("user2", "secret2")
    model = reader.get_model(uid)
    answer = model.chat(messages=messages, generate_config={"temperature": 0, "max_tokens": 32})
    assert answer["choices"][0]["message"]["content"] == "The capital of France is Paris."
    pieces = model.chat(messages=messages, generate_config={"temperature": 0, "max_tokens": 32, "stream": True})
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in pieces if c.get("choices"))
    assert streamed == "The capital of France is Paris."

    openai = OpenAI(base_url=f"{server}/v1", api_key=ADMIN_KEY)
    reply = openai.chat.completions.create(model=uid, messages=messages, temperature=0)
    assert reply.choices[0].message.content == "The capital of France is Paris."
    stream = openai.chat.completions.create(model=uid, messages=messages, temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "The capital of France is Paris."

    # Completions through both SDKs.
    completion = model.generate("The capital of France is", generate_config={"temperature": 0, "max_tokens": 4})
    assert completion["choices"][0]["text"].strip()
    assert completion["usage"]["completion_tokens"] <= 4
    text = openai.completions.create(model=uid, prompt="The capital of France is", max_tokens=4, temperature=0)
    assert text.choices[0].text == completion["choices"][0]["text"]
    client.terminate_model(uid)


def test_structured_output_through_both_sdks(server, models):
    from pydantic import BaseModel

    class City(BaseModel):
        city: str
        population: int

    client = admin(server)
    uid = client.launch_model(model_name="smollm2-instruct", model_engine="llama.cpp", model_format="ggufv2",
                              quantization="Q4_1", model_path=f"{models}/SmolLM2-135M-Instruct.Q4_1.gguf")
    messages = [{"role": "user", "content": "Describe Paris as JSON."}]
    openai = OpenAI(base_url=f"{server}/v1", api_key=ADMIN_KEY)
    # The SDK's parse helper (a pydantic model becomes a json_schema response format).
    parse = getattr(openai.chat.completions, "parse", None) or openai.beta.chat.completions.parse
    done = parse(model=uid, messages=messages, response_format=City, max_tokens=96, seed=3)
    assert isinstance(done.choices[0].message.parsed, City), done
    # vLLM's fields through extra_body.
    reply = openai.chat.completions.create(model=uid, messages=[{"role": "user", "content": "Is the sky blue?"}],
                                           extra_body={"guided_choice": ["yes", "no"]}, seed=1)
    assert reply.choices[0].message.content in ("yes", "no")
    # A schema that cannot compile is a 400 the SDK raises.
    import openai as sdk
    with pytest.raises(sdk.BadRequestError) as refused:
        openai.chat.completions.create(model=uid, messages=messages,
                                       extra_body={"guided_regex": "a(b"})
    # The SDK keeps our {"detail": ...} body as is (its message shows OpenAI's error shape only).
    assert "invalid grammar" in refused.value.response.json()["detail"]
    # xinference-client: the response format rides in generate_config.
    model = Client(server)
    model.login("user2", "secret2")
    answer = model.get_model(uid).chat(messages=messages, generate_config={
        "max_tokens": 96, "seed": 5, "response_format": {"type": "json_object"}})
    assert isinstance(json.loads(answer["choices"][0]["message"]["content"]), dict), answer
    client.terminate_model(uid)


def test_tool_calls_and_logprobs_through_both_sdks(server, models):
    client = admin(server)
    uid = client.launch_model(model_name="smollm2-instruct", model_engine="llama.cpp", model_format="ggufv2",
                              quantization="Q4_1", model_path=f"{models}/SmolLM2-135M-Instruct.Q4_1.gguf")
    tools = [{"type": "function", "function": {
        "name": "get_weather", "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]}},
                       "required": ["city"], "additionalProperties": False}}}]
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    openai = OpenAI(base_url=f"{server}/v1", api_key=ADMIN_KEY)
    reply = openai.chat.completions.create(model=uid, messages=messages, tools=tools, tool_choice="required",
                                           parallel_tool_calls=False, seed=1, max_tokens=64)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", reply
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.function.name == "get_weather", reply
    assert json.loads(call.function.arguments)["city"] in ("Paris", "Rome", "Oslo")
    # The SDK's stream helper assembles the streamed call.
    named = {"type": "function", "function": {"name": "get_weather"}}
    helper = getattr(openai.chat.completions, "stream", None) or openai.beta.chat.completions.stream
    with helper(model=uid, messages=messages, tools=tools, tool_choice=named,
                parallel_tool_calls=False, seed=2, max_tokens=64) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    streamed = final.choices[0].message.tool_calls[0]
    assert streamed.function.name == "get_weather", final
    assert json.loads(streamed.function.arguments)["city"] in ("Paris", "Rome", "Oslo")
    # The call and the tool's answer go back in the history, as the SDK writes them.
    history = messages + [choice.message.model_dump(exclude_none=True),
                          {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}]
    follow = openai.chat.completions.create(model=uid, messages=history, tools=tools, max_tokens=16, seed=3)
    assert follow.choices[0].finish_reason in ("stop", "length", "tool_calls"), follow
    # Log probabilities in the SDK's types.
    scored = openai.chat.completions.create(model=uid, messages=messages, max_tokens=6, temperature=0,
                                            logprobs=True, top_logprobs=2)
    content = scored.choices[0].logprobs.content
    assert "".join(t.token for t in content) == scored.choices[0].message.content
    assert all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in content)
    # xinference-client: tools as chat's own argument.
    model = Client(server)
    model.login("user2", "secret2")
    answer = model.get_model(uid).chat(messages=messages, tools=tools, generate_config={
        "max_tokens": 64, "seed": 4, "tool_choice": "required", "parallel_tool_calls": False})
    assert answer["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather", answer
    # Its enable_thinking argument travels as chat_template_kwargs.
    answer = model.get_model(uid).chat(messages=messages, enable_thinking=False, generate_config={"max_tokens": 4})
    assert answer["choices"][0]["message"]["content"] is not None, answer
    client.terminate_model(uid)


def test_cluster_and_model_views(server, models):
    client = admin(server)
    uid = client.launch_model(model_name="all-MiniLM-L6-v2", model_type="embedding", model_uid="views",
                              model_path=f"{models}/all-MiniLM-L6-v2")
    described = client.describe_model(uid)
    assert described["model_type"] == "embedding" and described["model_name"] == "all-MiniLM-L6-v2"
    assert client.get_launch_model_progress(uid)["progress"] == 1.0
    engines = client.query_engine_by_model_name("smollm2-instruct")
    assert engines, engines
    assert client.get_workers_info()
    assert client.get_supervisor_info()
    client.terminate_model(uid)


def espeak(text):
    """`text` spoken by espeak-ng as WAV bytes (scripts/install-espeak.sh installs it)."""
    import subprocess
    import tempfile
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-g", "4", "-w", f.name, text], check=True)
        return open(f.name, "rb").read()


def test_speech_to_text_through_both_sdks(server, models):
    client = admin(server)
    uid = client.launch_model(model_name="whisper-tiny.en", model_type="audio", model_uid="sdk-whisper",
                              model_path=f"{models}/whisper-tiny.en")
    reader = Client(server)
    reader.login("user2", "secret2")
    assert reader.list_models()[uid]["model_type"] == "audio"
    audio = espeak("The weather today is sunny with a light wind from the west.")
    model = reader.get_model(uid)
    text = model.transcriptions(audio)["text"]
    assert "weather today is sunny" in text.lower()
    verbose = model.transcriptions(audio, language="en", response_format="verbose_json")
    assert verbose["text"] == text and verbose["segments"][0]["start"] >= 0
    # tiny.en cannot translate: the SDK raises with our reason.
    with pytest.raises(RuntimeError, match="English-only"):
        model.translations(audio)

    openai = OpenAI(base_url=f"{server}/v1", api_key=ADMIN_KEY)
    got = openai.audio.transcriptions.create(model=uid, file=("speech.wav", audio))
    assert got.text == text
    srt = openai.audio.transcriptions.create(model=uid, file=("speech.wav", audio), response_format="srt")
    assert srt.startswith("1\n00:00:00,000 --> ")
    timed = openai.audio.transcriptions.create(model=uid, file=("speech.wav", audio), response_format="verbose_json",
                                              timestamp_granularities=["word"])
    assert "".join(w.word for w in timed.words).strip() == text
    assert all(w.start <= w.end for w in timed.words)
    stream = openai.audio.transcriptions.create(model=uid, file=("speech.wav", audio), stream=True)
    events = list(stream)
    assert events[-1].type == "transcript.text.done" and events[-1].text == text
    assert all(e.type == "transcript.text.delta" for e in events[:-1]) and len(events) >= 2

    client.terminate_model(uid)


def test_openapi_document_validates(server):
    """The served OpenAPI document is valid OpenAPI 3.1 by an independent validator, and is
    public with auth on, as upstream's."""
    import urllib.request

    from openapi_spec_validator import validate
    from openapi_spec_validator.validation import OpenAPIV31SpecValidator

    with urllib.request.urlopen(f"{server}/openapi.json", timeout=30) as res:
        assert res.status == 200
        spec = json.load(res)
    assert spec["openapi"] == "3.1.0"
    validate(spec, cls=OpenAPIV31SpecValidator)
    chat = spec["paths"]["/v1/chat/completions"]["post"]
    assert chat["x-permission"] == "models:read"
    assert {"bearer": []} in chat["security"]
