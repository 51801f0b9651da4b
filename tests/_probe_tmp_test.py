import tests.test_api_fuzz as m
from tests.test_api_fuzz import *

def test_probe(client):
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    client.post("/v1/organizations", json={"id": "acme"}, headers=admin)
    key = client.post("/v1/organizations/acme/keys", json={"name": "fuzz"}, headers=admin).json()["key"]
    tenant = {"Authorization": f"Bearer {key}"}
    integration = client.post("/v1/integrations", headers=tenant, json={"url": "http://127.0.0.1:9/hook", "events": ["docs:*"]}).json()["id"]
    f = Fuzzer(client)
    orig = f.send
    def send(method, url, **kw):
        r = orig(method, url, **kw)
        print(r.status_code, method, url, kw.get("content"), r.text[:150])
        return r
    f.send = send
    m._hand_written(f, key, integration)
