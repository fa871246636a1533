"""Signed commands and desired states: any changed byte or another key is refused."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartlocker.protocol import (
    BadSignature,
    ProtocolError,
    channel_of,
    decode_verified,
    encode,
    generate_private_key,
    load_private_key,
    load_public_key,
    private_key_pem,
    public_key_pem,
    sign,
    verify_payload,
)

from .strategies import signed_messages

KEY = generate_private_key()
OTHER_KEY = generate_private_key()


@given(signed_messages)
def test_signed_message_verifies_and_round_trips(message: Any) -> None:
    signed = sign(message, KEY)
    assert decode_verified(channel_of(signed), encode(signed), KEY.public_key()) == signed


@settings(max_examples=300)
@given(signed_messages, st.data())
def test_flipping_any_byte_is_rejected(message: Any, data: st.DataObject) -> None:
    payload = encode(sign(message, KEY))
    index = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
    new = data.draw(st.integers(min_value=0, max_value=255).filter(lambda b: b != payload[index]))
    tampered = payload[:index] + bytes([new]) + payload[index + 1 :]
    with pytest.raises(ProtocolError):
        decode_verified(channel_of(message), tampered, KEY.public_key())


@given(signed_messages)
def test_another_key_is_rejected(message: Any) -> None:
    payload = encode(sign(message, KEY))
    with pytest.raises(BadSignature):
        decode_verified(channel_of(message), payload, OTHER_KEY.public_key())


@given(signed_messages)
def test_unsigned_message_is_rejected(message: Any) -> None:
    with pytest.raises(BadSignature):
        verify_payload(encode(message), KEY.public_key())


@given(signed_messages)
def test_non_canonical_base64_signature_is_rejected(message: Any) -> None:
    payload = encode(sign(message, KEY)).decode()
    sig = sign(message, KEY).sig
    # The last data character before "==" carries 4 unused bits: set one of them.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = sig[-3]
    twin = alphabet[alphabet.index(last) ^ 1]
    forged = payload.replace(sig, sig[:-3] + twin + "==")
    with pytest.raises(BadSignature):
        verify_payload(forged, KEY.public_key())


def test_keys_round_trip_through_pem_files(tmp_path: Path) -> None:
    (tmp_path / "cloud.pem").write_bytes(private_key_pem(KEY))
    (tmp_path / "cloud.pub").write_bytes(public_key_pem(KEY))
    private = load_private_key(tmp_path / "cloud.pem")
    public = load_public_key(tmp_path / "cloud.pub")
    assert public_key_pem(private) == public_key_pem(public) == public_key_pem(KEY)


@pytest.mark.parametrize("data", [b"", b"garbage", public_key_pem(KEY)])
def test_loading_a_non_private_key_gives_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        load_private_key(data)


def test_libsodium_verifies_when_installed() -> None:
    """PyNaCl comes with the edge extra (and so with dev): the fast path is the one used."""
    from smartlocker.protocol import signing

    assert signing._SODIUM
    verifier = signing._verifier(KEY.public_key())
    assert verifier is signing._verifier(KEY.public_key())  # one VerifyKey per key, cached
    assert verifier.__qualname__.startswith("_sodium_verifier")


@pytest.mark.parametrize("sodium", [True, False], ids=["libsodium", "cryptography"])
@settings(max_examples=50)
@given(message=signed_messages)
def test_both_verifiers_give_the_same_answers(message: Any, sodium: bool) -> None:
    from smartlocker.protocol import signing

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(signing, "_SODIUM", sodium)
        signed = sign(message, KEY)
        payload = encode(signed)
        verify_payload(payload, KEY.public_key())
        with pytest.raises(BadSignature):
            verify_payload(payload, OTHER_KEY.public_key())
        assert signed.sig is not None
        raw = base64.b64decode(signed.sig)
        for bad in (raw[:-1], raw + b"\0", bytes(64), raw[:63] + bytes([raw[63] ^ 1])):
            forged = payload.replace(signed.sig.encode(), base64.b64encode(bad))
            with pytest.raises(BadSignature):
                verify_payload(forged, KEY.public_key())
