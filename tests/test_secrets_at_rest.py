"""Signing secrets encrypted at rest: the sealing itself (pure), the store on a real Postgres, a pg_dump, the CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from models.errors import SecretError, StoreError
from models.secretbox import Keyring, SecretKeyMissing, new_key, parse_key
from publisher.sending.signing import generate_secret
from publisher.store import Store, store_for
from publisher.store import tenants as tenant_store
from tests.conftest import Servers
from tests.support import COMMENTS_ENTITY, COMMENTS_TABLE, capture_and_publisher, wait_for, write_config
from walhook.receiver import VerifyingReceiver
from walhook.stack import _postgres_bin_dir

K1, K2 = new_key("k1"), new_key("k2")


def test_a_sealed_secret_opens_only_for_its_owner_and_key() -> None:
    ring, secret = Keyring([K1]), generate_secret()
    sealed = ring.seal(secret, "acme", 7)
    assert sealed.key_id == "k1" and secret.encode() not in sealed.ciphertext
    assert ring.unseal(sealed, "acme", 7) == secret
    for organization, integration in (("globex", 7), ("acme", None), ("acme", 8)):  # moved to another row
        with pytest.raises(SecretError, match=r"does not decrypt with key .k1.*copied from another row"):
            ring.unseal(sealed, organization, integration)
    with pytest.raises(SecretError, match="does not decrypt"):
        Keyring([new_key("k1")]).unseal(sealed, "acme", 7)  # another key under the same id
    with pytest.raises(SecretKeyMissing, match="encrypted with key id 'k1', which is not in \\[store\\] secret_keys "
                                                "\\(configured: k2\\)"):
        Keyring([K2]).unseal(sealed, "acme", 7)
    assert Keyring([K2, K1]).unseal(sealed, "acme", 7) == secret  # every key decrypts, the first encrypts
    assert Keyring([K2, K1]).seal(secret, "acme", 7).key_id == "k2"


def test_bad_keys_are_named_without_showing_them() -> None:
    with pytest.raises(ValueError, match="key 'k9' is 3 bytes; AES-256 needs 32") as info:
        parse_key("k9:AAAA")
    assert "AAAA" not in str(info.value)
    with pytest.raises(ValueError, match="not valid base64"):
        parse_key("k9:***")
    with pytest.raises(ValueError, match="ID:BASE64"):
        parse_key("no-colon")


def pg_dump(database: str) -> str:
    params = conninfo_to_dict(database)
    done = subprocess.run([str(_postgres_bin_dir() / "pg_dump"), "-h", str(params["host"]), "-p", str(params["port"]),
                           "-U", "postgres", "--schema", "walhook", str(params["dbname"])],
                          capture_output=True, text=True, check=True)
    assert "signing_secrets" in done.stdout
    return done.stdout


def assert_not_in_dump(dump: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in dump and secret.removeprefix("whsec_") not in dump, "a secret is in the dump in clear"


async def test_a_dump_of_the_store_holds_no_secret_in_clear(database: str) -> None:
    organization_secret, integration_secret = generate_secret(), generate_secret()
    async with Store(database, keyring=Keyring([K1])) as store:
        await store.add_organization("acme", organization_secret)
        integration = await store.add_integration("acme", "https://example.com/hooks", ["*"])
        await store.rotate_secret("acme", integration, secret=integration_secret)
        # The integration's first own secret inherits the organization's for the overlap, sealed anew for it.
        assert (await store.integration(integration)).secrets == [integration_secret, organization_secret]
        assert (await store.integrations_of("acme"))[0].secrets == [integration_secret, organization_secret]
    assert_not_in_dump(pg_dump(database), organization_secret, integration_secret)
    async with Store(database, keyring=Keyring([K1])) as store:  # a later process reads them back
        await store.rotate_secret("acme", None, secret=generate_secret())
        assert organization_secret in (await store._active_secrets(["acme"]))[("acme", None)]


async def test_plain_secrets_are_encrypted_at_the_first_start_with_a_key(database: str) -> None:
    secret = generate_secret()
    async with Store(database) as plain:  # as stored before keys were configured
        await plain.add_organization("acme", secret)
    assert secret in pg_dump(database)
    async with Store(database, keyring=Keyring([K1])) as store:
        assert (await store._active_secrets(["acme"]))[("acme", None)] == [secret]
    assert_not_in_dump(pg_dump(database), secret)
    with pytest.raises(SecretKeyMissing, match="encrypted with key id 'k1', but no \\[store\\] secret_keys"):
        await Store(database).open()  # plain text configured again: refused at open, not at the first delivery


async def test_rotate_key_moves_every_row_and_resumes_after_an_interruption(
        database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {f"org{n}": generate_secret() for n in range(5)}
    async with Store(database, keyring=Keyring([K1])) as store:
        for organization, secret in secrets.items():
            await store.add_organization(organization, secret)
    monkeypatch.setattr(tenant_store, "RESEAL_BATCH", 2)
    async with Store(database, keyring=Keyring([K2, K1])) as store:
        original = store._reseal
        async def crash_after_one_batch(rows: list[dict[str, object]]) -> None:
            await original(rows)
            raise StoreError("the store went away")  # the rotation is interrupted after its first batch
        monkeypatch.setattr(store, "_reseal", crash_after_one_batch)
        with pytest.raises(StoreError):
            await store.reseal_secrets()
        assert await key_ids(database) == {"k1": 3, "k2": 2}
        monkeypatch.setattr(store, "_reseal", original)
        assert await store.reseal_secrets() == 3  # the rest, nothing twice
    assert await key_ids(database) == {"k2": 5}
    async with Store(database, keyring=Keyring([K2])) as store:  # the old key can go
        assert (await store._active_secrets(list(secrets)))[("org3", None)] == [secrets["org3"]]
    with pytest.raises(SecretKeyMissing, match="key id 'k2'"):
        await Store(database, keyring=Keyring([K1])).open()


async def key_ids(database: str) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(database) as conn:
        rows = await (await conn.execute("SELECT key_id, count(*) FROM walhook.signing_secrets GROUP BY key_id"
                                         )).fetchall()
    return {key_id: count for key_id, count in rows}


async def test_a_secret_moved_to_another_row_does_not_decrypt(database: str) -> None:
    async with Store(database, keyring=Keyring([K1])) as store:
        await store.add_organization("acme")
        await store.add_organization("globex")
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as conn:
        await conn.execute("UPDATE walhook.signing_secrets SET ciphertext = (SELECT ciphertext FROM "
                           "walhook.signing_secrets WHERE organization_id = 'acme'), nonce = (SELECT nonce FROM "
                           "walhook.signing_secrets WHERE organization_id = 'acme') WHERE organization_id = 'globex'")
    async with Store(database, keyring=Keyring([K1])) as store:
        await store._active_secrets(["acme"])
        with pytest.raises(SecretError, match="organization 'globex' does not decrypt"):
            await store._active_secrets(["globex"])


def test_a_process_without_keys_refuses_unless_plaintext_is_asked_for() -> None:
    from models.settings import StoreSettings

    with pytest.raises(StoreError, match=r"no \[store\] secret_keys configured.*plaintext_secrets = true"):
        store_for(StoreSettings(dsn="postgresql://nowhere/x"))
    assert store_for(StoreSettings(dsn="postgresql://nowhere/x", plaintext_secrets=True)).keyring is None
    assert store_for(StoreSettings(dsn="postgresql://nowhere/x", secret_keys=[K2, K1])).keyring is not None


def walhook(config: Path, *args: str, keys: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("WALHOOK_")}
    if keys is not None:
        env["WALHOOK_STORE__SECRET_KEYS"] = keys
    return subprocess.run([sys.executable, "-m", "walhook", *args, "--config", str(config)], env=env,
                          capture_output=True, text=True, timeout=60)


async def test_the_cli_rotates_and_names_a_missing_key_in_one_line(database: str, tmp_path: Path) -> None:
    config = tmp_path / "walhook.toml"
    config.write_text(f'[store]\ndsn = "{database}"\n')
    refused = await asyncio.to_thread(walhook, config, "orgs", "add", "acme")
    assert refused.returncode == 1 and refused.stderr.strip().splitlines() == [
        "walhook: error: no [store] secret_keys configured: signing secrets would be stored in plain text; add a key "
        "(`walhook secrets new-key` makes one) or set [store] plaintext_secrets = true"]
    added = await asyncio.to_thread(walhook, config, "orgs", "add", "acme", "--json", keys=K1)
    assert added.returncode == 0, added.stderr
    rotated = await asyncio.to_thread(walhook, config, "secrets", "rotate-key", keys=f"{K2},{K1}")
    assert rotated.returncode == 0 and rotated.stdout.startswith("1 signing secrets re-encrypted with key 'k2'")
    missing = await asyncio.to_thread(walhook, config, "orgs", "list", keys=K1)
    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines() == [
        "walhook: error: the signing secret of organization 'acme' is encrypted with key id 'k2', which is not in "
        "[store] secret_keys (configured: k1)"]


async def test_webhooks_are_signed_with_secrets_the_publisher_encrypted_at_its_first_start(
        servers: Servers, database: str, topic: str, workdir: Path) -> None:
    """Secrets written in plain text (as before keys existed); the publisher starts with a key, seals them
    and signs with them: the receiver verifies every request, and the dump afterwards holds neither."""
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(COMMENTS_TABLE)
    config = write_config(workdir / "walhook.toml", database, servers.bootstrap_servers, topic, COMMENTS_ENTITY)
    config.write_text(config.read_text().replace("plaintext_secrets = true", f'secret_keys = ["{K1}"]'))
    async with VerifyingReceiver() as receiver, Store(database) as plain:
        receiver.secrets["acme"] = await plain.add_organization("acme")
        await plain.add_integration("acme", receiver.url_for("acme"), ["flows/comments:*"])
        async with capture_and_publisher(config, workdir, database, servers.bootstrap_servers, topic):
            with psycopg.connect(database, autocommit=True) as conn:
                conn.execute("INSERT INTO packet_comments (organization_id, packet_id, content) "
                             "VALUES ('acme', 1, 'a')")
            await wait_for(lambda: len(receiver.received) >= 1, what="a verified webhook")
    assert receiver.rejected == [] and [hook.organization for hook in receiver.received] == ["acme"]
    assert await key_ids(database) == {"k1": 1}
    assert_not_in_dump(pg_dump(database), receiver.secrets["acme"])
