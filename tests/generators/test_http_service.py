"""HttpAdGenerator against a real fake ad service on 127.0.0.1."""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import Callable

import pytest
from pydantic import SecretStr

from blocks.generators.base import AdRequest, GenerationError
from blocks.generators.content import pick_headline, pick_palette
from blocks.generators.http_service import SCHEMA, HttpAdGenerator, request_document
from tests.generators.conftest import PRODUCT_PNG, TEMPLATE_PNG
from tests.support.http_fake import SERVICE_TOKEN, FakeServer, Reply, b64, png_bytes
from tests.support.prefect_server import free_port


def service(fake: FakeServer, **kw: object) -> HttpAdGenerator:
    fields: dict[str, object] = {
        "url": f"{fake.url}/v1/ads",
        "auth_token": SecretStr(SERVICE_TOKEN),
    }
    fields.update(kw)
    return HttpAdGenerator(**fields)


async def test_posts_the_documented_request_and_returns_the_base64_image(
    service_fake: FakeServer, make_request: Callable[..., AdRequest]
) -> None:
    request = make_request(
        content_source="hooks", color_mode="complementary", variation_index=1, variations=4
    )
    image = await service(service_fake).generate(request)

    assert (image.content_type, image.width, image.height) == ("image/png", 30, 30)
    assert image.headline == "Own the trail" == pick_headline(request)
    (seen,) = service_fake.seen
    assert (seen.method, seen.path) == ("POST", "/v1/ads")
    assert seen.headers["authorization"] == f"Bearer {SERVICE_TOKEN}"
    body = seen.body
    assert body["schema"] == SCHEMA
    assert seen.headers["idempotency-key"] == body["request_id"]
    assert body["product"]["name"] == "Trail Runner 2"
    assert body["product"]["key_benefits"] == ["Grips wet rock", "Weighs 240 g"]
    assert body["template"]["name"] == "spring/banner-01.png"
    assert body["template"]["copy"] == "Spring sale -30%"
    assert base64.b64decode(body["template"]["image"]["base64"]) == TEMPLATE_PNG
    assert base64.b64decode(body["product_image"]["base64"]) == PRODUCT_PNG
    assert body["parameters"] == {
        "content_source": "hooks",
        "color_mode": "complementary",
        "image_mode": "auto",
        "variations": 4,
    }
    assert body["content"] == {
        "headline": "Own the trail",
        "palette": list(pick_palette(request)[:3]),
    }
    assert body["variation"] == {"index": 1, "count": 4}
    assert body["output"] == {"width": 1080, "height": 1080}


def test_request_id_is_stable_and_original_colours_send_no_palette(
    make_request: Callable[..., AdRequest],
) -> None:
    first = request_document(make_request(color_mode="original"))
    assert first["content"]["palette"] is None
    assert (
        request_document(make_request(color_mode="original"))["request_id"] == first["request_id"]
    )
    assert (
        request_document(make_request(color_mode="original", variation_index=1))["request_id"]
        != first["request_id"]
    )
    assert request_document(make_request(product_image=None))["product_image"] is None


async def test_downloads_image_urls_with_auth_only_on_the_services_own_origin(
    service_fake: FakeServer, other_host: FakeServer, make_request: Callable[..., AdRequest]
) -> None:
    same_origin = png_bytes(14, 9)
    service_fake.then(
        Reply(200, {"image": {"url": "/files/ad-1.png"}, "headline": "Rendered headline"}),
        Reply(200, same_origin),
        Reply(200, {"image": {"url": f"{other_host.url}/cdn/ad-2.png?X-Signature=abc"}}),
    )
    generator = service(service_fake)
    first = await generator.generate(make_request())
    second = await generator.generate(make_request())

    assert (first.width, first.height, first.headline) == (14, 9, "Rendered headline")
    assert service_fake.seen[1].path == "/files/ad-1.png"
    assert service_fake.seen[1].headers["authorization"] == f"Bearer {SERVICE_TOKEN}"
    assert (second.width, second.height) == (16, 16)
    assert second.headline == pick_headline(make_request())
    (download,) = other_host.seen
    assert download.path == "/cdn/ad-2.png?X-Signature=abc"
    assert "authorization" not in download.headers


@pytest.mark.parametrize(
    ("replies", "reason"),
    [
        ([Reply(200, {"status": "queued"})], "without an image object"),
        ([Reply(200, {"image": {}})], "neither base64 nor url"),
        ([Reply(200, {"image": {"base64": "@@@"}})], "not valid base64"),
        ([Reply(200, {"image": {"base64": b64(b"GIF but not really")}})], "not a readable image"),
        ([Reply(200, {"image": {"url": "ftp://example.com/x.png"}})], "not http(s)"),
        (
            [
                Reply(200, {"image": {"url": "/gone.png"}}),
                Reply(404, {"error": {"message": "expired"}}),
            ],
            "download of http://127.0.0.1",
        ),
    ],
)
async def test_a_200_without_a_usable_image_is_permanent(
    service_fake: FakeServer,
    make_request: Callable[..., AdRequest],
    replies: list[Reply],
    reason: str,
) -> None:
    service_fake.then(*replies)
    with pytest.raises(GenerationError) as caught:
        await service(service_fake).generate(make_request())
    assert reason in str(caught.value)
    assert caught.value.retryable is False


async def test_downloads_larger_than_the_limit_are_refused(
    service_fake: FakeServer, make_request: Callable[..., AdRequest]
) -> None:
    service_fake.then(Reply(200, {"image": {"url": "/big.png"}}), Reply(200, b"x" * 5000))
    with pytest.raises(GenerationError, match="larger than max_download_bytes"):
        await service(service_fake, max_download_bytes=4096).generate(make_request())


@pytest.mark.parametrize(
    ("reply", "retryable", "retry_after", "text"),
    [
        (
            Reply(429, {"error": {"message": "slow down"}}, {"retry-after": "12"}),
            True,
            12.0,
            "rate limited",
        ),
        (
            Reply(503, {"error": {"message": "busy", "retry_after": 2.5}}),
            True,
            2.5,
            "temporarily unavailable",
        ),
        (Reply(500, b"<html>Internal Server Error</html>"), True, None, "Internal Server Error"),
        (Reply(504, {}), True, None, "HTTP 504"),
        (
            Reply(401, {"error": {"message": "bad token"}}),
            False,
            None,
            "check the block's auth_token",
        ),
        (Reply(403, {}), False, None, "rejected the credentials"),
        (Reply(404, {}), False, None, "check the block's url"),
        (
            Reply(422, {"error": {"message": "template has no text area"}}),
            False,
            None,
            "template has no text area",
        ),
        (
            Reply(409, {"error": {"message": "renderer restarting", "retryable": True}}),
            True,
            None,
            "renderer restarting",
        ),
        (
            Reply(503, {"error": {"message": "model removed", "retryable": False}}),
            False,
            None,
            "model removed",
        ),
    ],
)
async def test_error_statuses_are_classified(
    *,
    service_fake: FakeServer,
    make_request: Callable[..., AdRequest],
    reply: Reply,
    retryable: bool,
    retry_after: float | None,
    text: str,
) -> None:
    service_fake.then(reply)
    with pytest.raises(GenerationError) as caught:
        await service(service_fake).generate(make_request())
    assert (caught.value.retryable, caught.value.retry_after) == (retryable, retry_after)
    assert text in str(caught.value)


async def test_timeouts_and_refused_connections_are_retryable(
    service_fake: FakeServer, make_request: Callable[..., AdRequest]
) -> None:
    stalled = threading.Event()
    service_fake.then(Reply(hold=stalled))
    try:
        with pytest.raises(GenerationError) as caught:
            await service(service_fake, timeout=0.2).generate(make_request())
    finally:
        stalled.set()
    assert caught.value.retryable is True
    assert "did not answer within 0.2s" in str(caught.value)

    closed = HttpAdGenerator(
        url=f"http://127.0.0.1:{free_port()}/ads", auth_token=SecretStr(SERVICE_TOKEN)
    )
    with pytest.raises(GenerationError) as caught:
        await closed.generate(make_request())
    assert caught.value.retryable is True


async def test_custom_auth_header_and_raw_token(
    service_fake: FakeServer, make_request: Callable[..., AdRequest]
) -> None:
    service_fake.then(Reply(200, {"image": {"base64": b64(png_bytes())}}))
    await service(service_fake, auth_header="X-Api-Key", auth_scheme="").generate(make_request())
    assert service_fake.seen[0].headers["x-api-key"] == SERVICE_TOKEN
    assert "authorization" not in service_fake.seen[0].headers


async def test_the_token_never_leaks_into_logs_errors_or_reprs(
    service_fake: FakeServer,
    make_request: Callable[..., AdRequest],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    generator = service(service_fake)
    service_fake.then(
        Reply(401, {"error": {"message": f"token Bearer {SERVICE_TOKEN} is revoked"}}),
        Reply(500, f"crash while handling {SERVICE_TOKEN}".encode()),
    )
    texts = [
        repr(generator),
        str(generator),
        str(generator.model_dump()),
        generator.model_dump_json(),
    ]
    for _ in range(2):
        with pytest.raises(GenerationError) as caught:
            await generator.generate(make_request())
        texts += [str(caught.value), repr(caught.value)]
    await generator.generate(make_request())
    texts.append(caplog.text)
    assert "token Bearer *** is revoked" in texts[4]
    for text in texts:
        assert SERVICE_TOKEN not in text


async def test_redirects_are_followed_only_for_downloads_that_carry_no_secret(
    service_fake: FakeServer, other_host: FakeServer, make_request: Callable[..., AdRequest]
) -> None:
    other_host.then(Reply(302, {}, {"location": "/final/ad.png"}))
    service_fake.then(
        Reply(200, {"image": {"url": f"{other_host.url}/signed/ad.png"}}),
        Reply(200, {"image": {"url": "/files/moved.png"}}),
        Reply(302, {}, {"location": f"{other_host.url}/steal"}),
    )
    generator = service(service_fake)
    image = await generator.generate(make_request())
    assert (image.width, image.height) == (16, 16)
    assert [s.path for s in other_host.seen] == ["/signed/ad.png", "/final/ad.png"]

    with pytest.raises(GenerationError, match="HTTP 302"):
        await generator.generate(make_request())
    assert [s.path for s in other_host.seen] == ["/signed/ad.png", "/final/ad.png"]
