"""GeminiImageGenerator against a real fake Gemini server on 127.0.0.1."""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable

import pytest
from pydantic import SecretStr

from blocks.generators.base import AdRequest, GenerationError
from blocks.generators.content import pick_headline, pick_palette
from blocks.generators.gemini import GeminiImageGenerator, build_prompt, closest_aspect_ratio
from tests.generators.conftest import PRODUCT_PNG, TEMPLATE_PNG
from tests.support.http_fake import (
    GEMINI_KEY,
    FakeServer,
    Reply,
    gemini_error,
    gemini_image_reply,
    png_bytes,
)
from tests.support.prefect_server import free_port

RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"


def gemini(fake: FakeServer, **kw: object) -> GeminiImageGenerator:
    fields: dict[str, object] = {"api_key": SecretStr(GEMINI_KEY), "base_url": f"{fake.url}/v1beta"}
    fields.update(kw)
    return GeminiImageGenerator(**fields)


async def test_generates_an_image_from_template_product_and_prompt(
    gemini_fake: FakeServer, make_request: Callable[..., AdRequest]
) -> None:
    request = make_request(content_source="benefits", color_mode="brand", variation_index=1)
    image = await gemini(gemini_fake).generate(request)

    assert (image.content_type, image.width, image.height) == ("image/png", 40, 40)
    assert image.headline == "Trail Runner 2: Weighs 240 g" == pick_headline(request)
    (seen,) = gemini_fake.seen
    assert seen.path == "/v1beta/models/gemini-2.5-flash-image:generateContent"
    assert seen.headers["x-goog-api-key"] == GEMINI_KEY
    assert "key=" not in seen.path
    parts = seen.body["contents"][0]["parts"]
    prompt = parts[0]["text"]
    assert base64.b64decode(parts[1]["inline_data"]["data"]) == TEMPLATE_PNG
    assert base64.b64decode(parts[2]["inline_data"]["data"]) == PRODUCT_PNG
    assert parts[1]["inline_data"]["mime_type"] == "image/png"
    assert seen.body["generationConfig"] == {
        "responseModalities": ["TEXT", "IMAGE"],
        "imageConfig": {"aspectRatio": "1:1"},
    }
    for fact in (
        "Trail Runner 2",
        "Peak",
        "Grips wet rock; Weighs 240 g",
        "A light trail shoe",
        '"Trail Runner 2: Weighs 240 g"',
        "variation 2 of 3",
        "spring/banner-01.png",
    ):
        assert fact in prompt
    background, accent, text = pick_palette(request)[:3]
    assert f"background {background}, accent {accent}, text {text}" in prompt
    assert "brand colours" in prompt


@pytest.mark.parametrize(
    ("overrides", "expected", "absent"),
    [
        ({"content_source": "hooks", "variation_index": 2}, ['"Light on your feet"', "hooks"], []),
        (
            {"content_source": "recreate_template"},
            ['Template copy: "Spring sale -30%"', '"Spring sale -30% — Trail Runner 2"'],
            [],
        ),
        (
            {"color_mode": "original"},
            ["keep the template's original colour palette"],
            ["background #"],
        ),
        ({"color_mode": "complementary"}, ["complements of the brand colours"], []),
        (
            {"image_mode": "specific", "product_image_path": "products/shoe.png"},
            ["chosen by the marketer"],
            [],
        ),
        ({"image_mode": "auto"}, ["picked automatically"], []),
        ({"product_image": None}, ["There is no product photo"], ["SECOND attached image"]),
    ],
)
def test_prompt_follows_the_shared_parameter_semantics(
    make_request: Callable[..., AdRequest],
    overrides: dict[str, object],
    expected: list[str],
    absent: list[str],
) -> None:
    request = make_request(**overrides)
    prompt = build_prompt(request, "1:1")
    assert f'"{pick_headline(request)}"' in prompt
    for text in expected:
        assert text in prompt
    for text in absent:
        assert text not in prompt
    if request.parameters.color_mode == "complementary":
        assert ", ".join(pick_palette(request)[:2]) in prompt.replace(", accent ", ", ")


async def test_aspect_ratio_from_block_or_closest_to_the_ad_size(
    gemini_fake: FakeServer, make_request: Callable[..., AdRequest]
) -> None:
    assert closest_aspect_ratio(1920, 1080) == "16:9"
    assert closest_aspect_ratio(1080, 1350) == "4:5"
    await gemini(gemini_fake).generate(make_request(width=1080, height=1920, product_image=None))
    await gemini(gemini_fake, aspect_ratio="3:2", model="models/gemini-2.5-flash-image").generate(
        make_request()
    )
    assert gemini_fake.seen[1].path == "/v1beta/models/gemini-2.5-flash-image:generateContent"
    configs = [s.body["generationConfig"]["imageConfig"]["aspectRatio"] for s in gemini_fake.seen]
    assert configs == ["9:16", "3:2"]
    assert len(gemini_fake.seen[0].body["contents"][0]["parts"]) == 2  # no product image part


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (
            Reply(200, {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}),
            "blockReason=PROHIBITED_CONTENT",
        ),
        (
            Reply(
                200,
                {
                    "candidates": [
                        {
                            "content": {"parts": [{"text": "I can't draw that."}]},
                            "finishReason": "IMAGE_SAFETY",
                        }
                    ]
                },
            ),
            "finishReason=IMAGE_SAFETY",
        ),
        (Reply(200, {"candidates": [{"finishReason": "SAFETY"}]}), "finishReason=SAFETY"),
        (
            Reply(
                200,
                {
                    "candidates": [
                        {
                            "content": {"parts": [{"text": "Here is an analysis"}]},
                            "finishReason": "NO_IMAGE",
                        }
                    ]
                },
            ),
            "finishReason=NO_IMAGE",
        ),
        (
            Reply(
                200,
                {
                    "candidates": [
                        {
                            "content": {"parts": [{"text": "A lovely ad idea."}]},
                            "finishReason": "STOP",
                        }
                    ]
                },
            ),
            "text but no image: A lovely ad idea.",
        ),
        (
            Reply(
                200,
                {
                    "candidates": [
                        {
                            "content": {
                                "parts": [
                                    {
                                        "inlineData": {
                                            "mimeType": "image/png",
                                            "data": "%%%not-base64",
                                        }
                                    }
                                ]
                            }
                        }
                    ]
                },
            ),
            "not valid base64",
        ),
        (
            Reply(
                200,
                {
                    "candidates": [
                        {
                            "content": {
                                "parts": [
                                    {
                                        "inlineData": {
                                            "mimeType": "image/png",
                                            "data": base64.b64encode(b"not an image").decode(),
                                        }
                                    }
                                ]
                            }
                        }
                    ]
                },
            ),
            "not a readable image",
        ),
    ],
)
async def test_a_200_without_an_image_is_a_permanent_failure_with_its_reason(
    gemini_fake: FakeServer, make_request: Callable[..., AdRequest], reply: Reply, reason: str
) -> None:
    gemini_fake.then(reply)
    with pytest.raises(GenerationError) as caught:
        await gemini(gemini_fake).generate(make_request())
    assert reason in str(caught.value)
    assert caught.value.retryable is False


async def test_snake_case_inline_data_is_accepted(
    gemini_fake: FakeServer, make_request: Callable[..., AdRequest]
) -> None:
    jpeg = png_bytes(12, 10)
    gemini_fake.then(
        Reply(
            200,
            {
                "candidates": [
                    {
                        "content": {
                            "parts": [
                                {
                                    "inline_data": {
                                        "mime_type": "image/png",
                                        "data": base64.b64encode(jpeg).decode(),
                                    }
                                }
                            ]
                        },
                        "finishReason": "STOP",
                    }
                ]
            },
        )
    )
    image = await gemini(gemini_fake).generate(make_request())
    assert (image.width, image.height, image.data) == (12, 10, jpeg)


async def test_429_is_retryable_after_the_servers_retry_delay(
    gemini_fake: FakeServer, make_request: Callable[..., AdRequest]
) -> None:
    gemini_fake.then(
        gemini_error(
            429,
            "RESOURCE_EXHAUSTED",
            "Quota exceeded for images per minute",
            [{"@type": RETRY_INFO, "retryDelay": "27s"}],
        ),
        gemini_error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted"),
    )
    errors = []
    for _ in range(2):
        with pytest.raises(GenerationError) as caught:
            await gemini(gemini_fake).generate(make_request())
        errors.append(caught.value)
    assert [(e.retryable, e.retry_after) for e in errors] == [(True, 27.0), (True, None)]
    assert "429 RESOURCE_EXHAUSTED" in str(errors[0])
    assert "max_in_flight" in str(errors[0])


@pytest.mark.parametrize(
    ("status", "rpc", "headers", "retry_after"),
    [
        (500, "INTERNAL", {}, None),
        (503, "UNAVAILABLE", {"retry-after": "4"}, 4.0),
        (504, "DEADLINE_EXCEEDED", {}, None),
    ],
)
async def test_server_errors_are_retryable(
    *,
    gemini_fake: FakeServer,
    make_request: Callable[..., AdRequest],
    status: int,
    rpc: str,
    headers: dict[str, str],
    retry_after: float | None,
) -> None:
    reply = gemini_error(status, rpc, "The model is overloaded.")
    reply.headers = headers
    gemini_fake.then(reply)
    with pytest.raises(GenerationError) as caught:
        await gemini(gemini_fake).generate(make_request())
    assert caught.value.retryable is True
    assert caught.value.retry_after == retry_after
    assert f"{status} {rpc}" in str(caught.value)


@pytest.mark.parametrize(
    ("reply", "fix"),
    [
        (None, "API key was rejected"),  # the fake's own check of the x-goog-api-key header
        (
            gemini_error(403, "PERMISSION_DENIED", "Permission denied on resource project."),
            "enable the Generative Language API",
        ),
        (
            gemini_error(
                404, "NOT_FOUND", "models/nano-bananas is not found for API version v1beta"
            ),
            "model 'gemini-2.5-flash-image' was not found",
        ),
        (
            gemini_error(
                400,
                "FAILED_PRECONDITION",
                "User location is not supported for the API use without a billing account linked.",
            ),
            "enable billing",
        ),
        (
            gemini_error(400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
            "check the block's aspect_ratio and the input images",
        ),
    ],
)
async def test_other_4xx_are_permanent_and_say_what_to_fix(
    gemini_fake: FakeServer,
    make_request: Callable[..., AdRequest],
    reply: Reply | None,
    fix: str,
) -> None:
    generator = (
        gemini(gemini_fake, api_key=SecretStr("AIza-wrong-key"))
        if reply is None
        else gemini(gemini_fake)
    )
    if reply is not None:
        gemini_fake.then(reply)
    with pytest.raises(GenerationError) as caught:
        await generator.generate(make_request())
    assert caught.value.retryable is False
    assert fix in str(caught.value)
    assert "AIza-wrong-key" not in str(caught.value)


async def test_timeouts_and_refused_connections_are_retryable(
    gemini_fake: FakeServer, make_request: Callable[..., AdRequest]
) -> None:
    stalled = threading.Event()
    gemini_fake.then(Reply(hold=stalled))
    try:
        with pytest.raises(GenerationError) as caught:
            await gemini(gemini_fake, timeout=0.2).generate(make_request())
    finally:
        stalled.set()
    assert caught.value.retryable is True
    assert "did not answer within 0.2s" in str(caught.value)

    closed = GeminiImageGenerator(
        api_key=SecretStr(GEMINI_KEY), base_url=f"http://127.0.0.1:{free_port()}/v1beta"
    )
    with pytest.raises(GenerationError) as caught:
        await closed.generate(make_request())
    assert caught.value.retryable is True
    assert "could not be reached" in str(caught.value)


async def test_the_api_key_never_leaks_into_logs_errors_or_reprs(
    gemini_fake: FakeServer,
    make_request: Callable[..., AdRequest],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    generator = gemini(gemini_fake)
    # A server that echoes the key back in its error message must not get it into our errors.
    gemini_fake.then(
        gemini_error(400, "INVALID_ARGUMENT", f"Bad request from key {GEMINI_KEY}"),
        gemini_error(429, "RESOURCE_EXHAUSTED", f"quota of {GEMINI_KEY} exhausted"),
        Reply(
            200,
            {
                "candidates": [
                    {"content": {"parts": [{"text": f"echo {GEMINI_KEY}"}]}, "finishReason": "STOP"}
                ]
            },
        ),
        gemini_image_reply(png_bytes()),
    )
    texts = [
        repr(generator),
        str(generator),
        str(generator.model_dump()),
        generator.model_dump_json(),
    ]
    for _ in range(3):
        with pytest.raises(GenerationError) as caught:
            await generator.generate(make_request())
        texts += [str(caught.value), repr(caught.value)]
    await generator.generate(make_request())
    texts.append(caplog.text)
    assert "Bad request from key ***" in texts[4]
    for text in texts:
        assert GEMINI_KEY not in text
