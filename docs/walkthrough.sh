#!/usr/bin/env bash
# The walkthrough of docs/getting-started.md, as a script: run it from the repository after `make demo` (or
# `make .venv/.installed`). It needs bash, curl and jq. tests/test_walkthrough.py runs it and checks that
# docs/getting-started.md shows exactly these commands.
set -euo pipefail
trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT   # stop every process it started

# walkthrough
export PATH="$PWD/.venv/bin:$PATH"
API_PORT=${API_PORT:-8080} RECEIVER_PORT=${RECEIVER_PORT:-9000}   # change them if these ports are taken
cd "$(mktemp -d)"

# 1. Postgres and Kafka on this machine (no Docker); stack.env holds DSN, KAFKA and PSQL once both answer
walhook stack up --dir stack > stack.log 2>&1 &
until [ -f stack/stack.env ]; do sleep 0.2; done
. stack/stack.env

# 2. The app's table: walhook captures it unchanged
"$PSQL" "$DSN" -q -c "CREATE TABLE packet_comments (id serial PRIMARY KEY, organization_id text NOT NULL,
    packet_id int NOT NULL, content text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now())"

# 3. A starter walhook.toml from the table; ADMIN (random) becomes [api] admin_token, and the receiver
#    on 127.0.0.1 must be admitted by [publisher] allowed_networks (private addresses are refused otherwise)
ADMIN=$(python -c 'import secrets; print(secrets.token_hex(32))')
walhook init --dsn "$DSN" --kafka "$KAFKA" --table packet_comments --admin-token "$ADMIN" \
    --allow-network 127.0.0.1/32 --api-port "$API_PORT"

# 4. The three processes read ./walhook.toml; each logs one "ready:" line when it is
walhook cdc > cdc.log 2>&1 &
walhook publisher > publisher.log 2>&1 &
walhook api > api.log 2>&1 &
for process in cdc publisher api; do until grep -q ' ready: ' $process.log; do sleep 0.2; done; done
grep -h ' ready: ' cdc.log publisher.log api.log

# 5. An organization (its signing secret is shown once), a receiver that verifies with it, an API key
API=http://127.0.0.1:$API_PORT
curl -sf -X POST $API/v1/organizations -H "authorization: Bearer $ADMIN" \
    -H 'content-type: application/json' -d '{"id": "acme"}' | jq -r .secret > acme.secret
walhook receiver --port "$RECEIVER_PORT" --secret-file acme=acme.secret > receiver.log &
KEY=$(curl -sf -X POST $API/v1/organizations/acme/keys -H "authorization: Bearer $ADMIN" \
    -H 'content-type: application/json' -d '{"name": "backend"}' | jq -r .key)

# 6. An integration: every change of packet_comments, to the receiver
curl -sf -X POST $API/v1/integrations -H "authorization: Bearer $KEY" -H 'content-type: application/json' \
    -d "{\"url\": \"http://127.0.0.1:$RECEIVER_PORT/hooks/acme\", \"events\": [\"packet_comments:*\"]}" \
    | tee integration.json | jq -c '{id, url, events, enabled}'
INTEGRATION=$(jq .id integration.json)   # ids are drawn at random: read yours
sleep 3   # publishers pick up a new integration within [publisher] integrations_cache_seconds (2 s)

# 7. The app changes rows; a verified webhook follows each change
"$PSQL" "$DSN" -q -c "INSERT INTO packet_comments (organization_id, packet_id, content)
    VALUES ('acme', 7, 'Looks good'), ('acme', 7, 'Needs a signature')"
"$PSQL" "$DSN" -q -c "UPDATE packet_comments SET content = 'Looks great', updated_at = now() WHERE id = 1"
until [ "$(grep -c '^verified' receiver.log)" -ge 3 ]; do sleep 0.2; done
cat receiver.log

# 8. The delivery log through the API: list, show one
curl -sf "$API/v1/deliveries?limit=5" -H "authorization: Bearer $KEY" \
    | jq -c '.items[] | {id, webhook_id, entity_path, operation, status, attempts}'
curl -sf $API/v1/deliveries/1 -H "authorization: Bearer $KEY" \
    | jq -c '{status, attempts: [.attempts_log[] | {number, url, response_status}]}'

# 9. The command line, through the same API (no database credentials needed): redeliver one,
#    replay the integration from the start of the topic, then one screen of status from the store
walhook --api $API --token "$KEY" redeliver 1
walhook --api $API --token "$KEY" replay --integration "$INTEGRATION" --offset 0 --wait
until [ "$(grep -c '^verified' receiver.log)" -ge 7 ]; do sleep 0.2; done
walhook status
# end of walkthrough
