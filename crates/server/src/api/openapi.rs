//! The OpenAPI 3.1 description of every route, written by hand. `tests/api.rs` checks that it
//! names exactly the routes of [`ROUTES`] and that each of them answers.

use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::api::{BODY_LIMIT, MAX_URI_PART};

/// (method, path, needs a token) of every route but the admin routes.
pub const ROUTES: [(&str, &str, bool); 7] = [
    ("GET", "/healthz", false),
    ("GET", "/openapi.json", false),
    ("GET", "/customer/profile", true),
    ("GET", "/artifacts/{hash}", true),
    ("GET", "/snapshots", true),
    ("GET", "/export/customer_risk_scores", true),
    ("GET", "/metrics", true),
];

/// (method, path) of every admin route: each needs an admin token (a read token gets 403).
pub const ADMIN_ROUTES: [(&str, &str); 8] = [
    ("POST", "/admin/jobs/ingest"),
    ("POST", "/admin/jobs/snapshot"),
    ("POST", "/admin/commands"),
    ("GET", "/admin/jobs/{id}"),
    ("GET", "/admin/jobs/{id}/output"),
    ("GET", "/admin/ingested"),
    ("POST", "/admin/tokens"),
    ("DELETE", "/admin/tokens/{name}"),
];

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

fn time_param(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "required": false,
        "description": description,
        "schema": { "type": "string", "examples": ["1997-09-30", "1997-09-30T12:00:00Z"] }
    })
}

fn hash() -> Value {
    json!({ "type": "string", "pattern": "^[0-9a-f]{64}$" })
}

fn nullable_number() -> Value {
    json!({ "type": ["number", "null"] })
}

fn nullable_string() -> Value {
    json!({ "type": ["string", "null"] })
}

/// Responses every protected route can give besides its own.
fn guarded(mut responses: Value) -> Value {
    if let Some(m) = responses.as_object_mut() {
        m.insert(
            "401".into(),
            error_response("No bearer token, or an unknown or revoked one."),
        );
        m.insert(
            "414".into(),
            error_response(&format!("Query string or path over {MAX_URI_PART} bytes.")),
        );
        m.insert(
            "500".into(),
            error_response("Internal error (details are logged, not returned)."),
        );
    }
    responses
}

/// What every admin route can answer besides its own.
fn admin_guarded(responses: Value) -> Value {
    let mut responses = guarded(responses);
    if let Some(m) = responses.as_object_mut() {
        m.insert(
            "403".into(),
            error_response("A read token: the route needs an admin token (`cis token create --scope admin`, `cis serve --print-admin-token`)."),
        );
    }
    responses
}

fn query(name: &str, required: bool, description: &str) -> Value {
    json!({ "name": name, "in": "query", "required": required, "description": description, "schema": { "type": "string" } })
}

fn job_queued() -> Value {
    json!({
        "description": "Queued; `Location` is where to poll it.",
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Job" } } }
    })
}

fn token_outcome(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Outcome" } } }
    })
}

/// The admin routes' entries of `paths`.
fn admin_paths(bearer: &Value) -> Value {
    json!({
        "/admin/jobs/ingest": { "post": {
            "summary": "Queue an ingest of the uploaded file (as `cis ingest`). The server reads no path the client names: the body is the file's bytes.",
            "security": bearer,
            "parameters": [
                query("kind", true, "orders, sessions, returns or customers."),
                query("name", true, "The file's name, recorded in the ingest run and its quarantine; also chooses the format when `format` is absent."),
                query("format", false, "csv, jsonl or cdnow (default: from `name`)."),
                query("recorded_at", false, "now (default), event-time, or a column name."),
                query("batch_rows", false, &format!(
                    "Events per batch, 1 to {} (default {}).",
                    cis_ingest::MAX_BATCH_ROWS,
                    cis_ingest::DEFAULT_BATCH_ROWS
                ))
            ],
            "requestBody": { "required": true, "content": { "application/octet-stream": {} },
                "description": format!("The file, at most {} bytes.", crate::api::admin::UPLOAD_LIMIT) },
            "responses": admin_guarded(json!({
                "202": job_queued(),
                "400": error_response("A parameter is missing, malformed or unknown."),
                "413": error_response("The upload is too large.")
            }))
        } },
        "/admin/jobs/snapshot": { "post": {
            "summary": "Queue a snapshot at (as_of, known_at) (as `cis snapshot create`).",
            "security": bearer,
            "parameters": [
                time_param("as_of", "T (required)."),
                time_param("known_at", "K (default: T).")
            ],
            "responses": admin_guarded(json!({
                "202": job_queued(),
                "400": error_response("A parameter is missing, malformed or unknown.")
            }))
        } },
        "/admin/commands": { "post": {
            "summary": "Run a `cis` command line on the server's store, as `cis` run beside the server does: every command but `ingest` (its own route), `serve`, `demo` and `generate`. One that changes the store (snapshot create, train, score, models promote|retire, token create|revoke, erase, monitor, store compact) is queued as a job; one that only reads it (runs, events, log, quarantine, models list|show, scores, audit, snapshot list|show|diff|replay|export, trainset export, export, access-log, erasures, token list) runs at once. A file the command reads (`erase --customers FILE`) is the body; a file it writes (`--out FILE`) is kept with the job for `GET /admin/jobs/{id}/output`. An erasure's rewrite of the records database is done when the server stops.",
            "security": bearer,
            "parameters": [{ "name": "arg", "in": "query", "required": true,
                "description": "The command line, one word per `arg`, in order (e.g. arg=train&arg=clv&arg=--snapshot&arg=267a5370).",
                "schema": { "type": "array", "items": { "type": "string" } }, "style": "form", "explode": true }],
            "requestBody": { "required": false, "content": { "application/octet-stream": {
                "schema": { "type": "string", "format": "binary" } } } },
            "responses": admin_guarded(json!({
                "200": { "description": "A read: it has run; the job, ended.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Job" } } } },
                "202": job_queued(),
                "400": error_response("Not a command line cis takes, or not one that runs through a server (the error says which, as `cis` would)."),
                "413": error_response("The file is too large."),
                "501": error_response("This server runs no command lines (not started by `cis serve`).")
            }))
        } },
        "/admin/ingested": { "get": {
            "summary": "Whether a file was ingested already: the completed ingest run of this kind whose file had this content (what `cis ingest DIR` beside a server asks before uploading each file).",
            "security": bearer,
            "parameters": [
                { "name": "kind", "in": "query", "required": true, "schema": { "type": "string", "enum": ["orders", "sessions", "returns", "customers"] } },
                { "name": "blake3", "in": "query", "required": true, "description": "The file's blake3, 64 hex digits.", "schema": hash() }
            ],
            "responses": admin_guarded(json!({
                "200": { "description": "`{\"run\": N}`, or `{\"run\": null}` when no completed run ingested it.", "content": { "application/json": { "schema": { "type": "object", "properties": { "run": { "type": ["integer", "null"] } } } } } },
                "400": error_response("A parameter is missing or malformed.")
            }))
        } },
        "/admin/jobs/{id}/output": { "get": {
            "summary": "What an ended command job wrote (its `--out`), given once and removed from the server after: a file's bytes, or a tar of a directory (an events export); the `x-cis-output` header says `file` or `directory`.",
            "security": bearer,
            "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "integer" } }],
            "responses": admin_guarded(json!({
                "200": { "description": "The file's bytes, or the directory as a tar.", "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } },
                "400": error_response("Not a job id."),
                "404": error_response("No such job, or it wrote no file, has not ended, or its file was fetched already.")
            }))
        } },
        "/admin/jobs/{id}": { "get": {
            "summary": "A job of this server: state (queued, running, done, failed), progress, and what the command printed and its exit code.",
            "security": bearer,
            "parameters": [{ "name": "id", "in": "path", "required": true, "schema": { "type": "integer" } }],
            "responses": admin_guarded(json!({
                "200": { "description": "The job.", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Job" } } } },
                "400": error_response("Not a job id."),
                "404": error_response("No such job on this server (ids start again at each start).")
            }))
        } },
        "/admin/tokens": { "post": {
            "summary": "Create a token (as `cis token create`): its text is in `stdout`, shown once.",
            "security": bearer,
            "parameters": [
                query("name", true, "1 to 64 of A-Z a-z 0-9 . _ - ; never reused."),
                query("scope", false, "read (default) or admin.")
            ],
            "responses": admin_guarded(json!({
                "201": token_outcome("Created."),
                "400": token_outcome("A name that is not allowed, or a bad parameter."),
                "409": token_outcome("The name was used before.")
            }))
        } },
        "/admin/tokens/{name}": { "delete": {
            "summary": "Revoke a token (as `cis token revoke`): refused from the next request on.",
            "security": bearer,
            "parameters": [{ "name": "name", "in": "path", "required": true, "schema": { "type": "string" } }],
            "responses": admin_guarded(json!({
                "200": token_outcome("Revoked."),
                "404": token_outcome("No such token."),
                "409": token_outcome("Already revoked.")
            }))
        } }
    })
}

fn admin_schemas() -> Value {
    let outcome = json!({
        "stdout": { "type": "string", "description": "What the command prints on stdout." },
        "stderr": { "type": "string", "description": "What it prints on stderr." },
        "exit_code": { "type": ["integer", "null"], "description": "Its exit code; null until it has ended." },
        "error": { "type": ["string", "null"], "description": "Why it failed (what `cis` prints after `error: `)." }
    });
    let mut job = json!({
        "id": { "type": "integer" },
        "kind": { "type": "string", "description": "ingest, snapshot, or the command's name (`train`, `models promote`, …)." },
        "has_output": { "type": "boolean", "description": "It wrote a file, for `GET /admin/jobs/{id}/output`." },
        "by": { "type": "string", "description": "The token name that queued it." },
        "state": { "type": "string", "enum": ["queued", "running", "done", "failed"] },
        "progress": { "oneOf": [{ "type": "null" }, { "type": "object", "properties": {
            "done": { "type": "integer" }, "total": { "type": "integer" } } }],
            "description": "Ingest: bytes of the upload read of total." }
    });
    if let (Some(j), Some(o)) = (job.as_object_mut(), outcome.as_object()) {
        j.extend(o.clone());
    }
    json!({
        "Outcome": { "type": "object", "properties": outcome },
        "Job": { "type": "object", "properties": job }
    })
}

pub fn spec() -> Value {
    let bearer = json!([{ "bearer": [] }]);
    let mut doc = base(&bearer);
    if let (Some(m), Value::Object(e)) = (doc["paths"].as_object_mut(), admin_paths(&bearer)) {
        m.extend(e);
    }
    if let (Some(m), Value::Object(e)) = (doc["components"]["schemas"].as_object_mut(), admin_schemas()) {
        m.extend(e);
    }
    doc
}

/// The document without the admin routes.
fn base(bearer: &Value) -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "cis — Customer Intelligence System API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "Point-in-time customer profiles (features as of T known at K, the latest scores that could \
                 have been known then, and the hashes that prove them), artifacts with their lineage, \
                 snapshots and metrics. Times are RFC 3339 or YYYY-MM-DD (midnight UTC) and are returned \
                 as RFC 3339 UTC. Every error is JSON {{\"error\": \"...\"}}. Request bodies over \
                 {BODY_LIMIT} bytes are refused with 413. No response contains personal data. Every \
                 response is sent with `X-Content-Type-Options: nosniff` and `Cache-Control: no-store`. A \
                 connection must send a complete request head within the server's header timeout (`cis serve \
                 --header-timeout`, also the keep-alive idle limit); one over `--max-connections` is answered \
                 503 and closed. A token is never accepted in a URL."
            ),
        },
        "servers": [{ "url": "http://127.0.0.1:8080" }],
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from `cis token create --name N [--scope read|admin]` (shown once; only its blake3 hash is stored). A read token gets every route but `/admin/...`, which needs an admin token. Revoke with `cis token revoke N`."
                }
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": { "type": "string" },
                        "parameter": { "type": "string", "description": "The parameter at fault, on 400." }
                    }
                },
                "Profile": {
                    "type": "object",
                    "required": ["customer_id", "as_of", "known_at", "features", "scores", "proof"],
                    "properties": {
                        "customer_id": { "type": "string" },
                        "as_of": { "type": "string", "format": "date-time" },
                        "known_at": { "type": "string", "format": "date-time" },
                        "features": {
                            "type": "object",
                            "description": "Every feature definition (name → value), computed from the log at (as_of, known_at) by the same code as snapshots.",
                            "additionalProperties": { "type": "number" }
                        },
                        "scores": {
                            "description": "From the latest score set whose as-of ≤ as_of and whose knowledge (its snapshot's known-at and its models' as-of) is not after known_at; null when there is none or the customer is not in it.",
                            "oneOf": [
                                { "type": "null" },
                                {
                                    "type": "object",
                                    "properties": {
                                        "as_of": { "type": "string", "format": "date-time", "description": "The score set's as-of." },
                                        "churn_probability": nullable_number(),
                                        "churn_band": { "type": ["string", "null"], "enum": ["low", "medium", "high", null] },
                                        "clv_12m": nullable_number(),
                                        "p_alive": nullable_number(),
                                        "expected_purchases_90d": nullable_number(),
                                        "segment": nullable_string()
                                    }
                                }
                            ]
                        },
                        "proof": {
                            "type": "object",
                            "properties": {
                                "log_head": hash(),
                                "log_batch": { "type": "integer", "description": "The last batch of the log prefix the features were read from; log_head is the head after it." },
                                "feature_definitions": hash(),
                                "scores": { "oneOf": [hash(), { "type": "null" }], "description": "The score artifact consulted." },
                                "snapshot": { "oneOf": [hash(), { "type": "null" }], "description": "The snapshot the scores were computed on." },
                                "models": { "type": "object", "description": "Model kind (churn, clv, segments) → model artifact hash.", "additionalProperties": hash() },
                                "model_stages": { "type": "object", "description": "Model kind → the stage that model held at the scores' as-of by the promotion record: production, staging or none.", "additionalProperties": { "type": "string", "enum": ["production", "staging", "none"] } }
                            }
                        }
                    }
                },
                "Artifact": {
                    "type": "object",
                    "properties": {
                        "hash": hash(),
                        "kind": { "type": "string", "examples": ["snapshot", "scores", "model/churn", "model/clv", "model/segments"] },
                        "schema": { "type": "integer" },
                        "as_of": { "type": "string", "format": "date-time" },
                        "created_at": { "type": "string", "format": "date-time" },
                        "body_bytes": { "type": "integer" },
                        "content_matches_hash": { "type": "boolean", "description": "false: the stored bytes no longer hash to the artifact's name (tampered)." },
                        "parents": {
                            "type": "array",
                            "description": "Lineage: the artifacts this one was derived from.",
                            "items": {
                                "type": "object",
                                "properties": { "hash": hash(), "kind": nullable_string(), "as_of": nullable_string() }
                            }
                        },
                        "summary": {
                            "description": "Kind-specific. snapshot: as_of, known_at, customers, features, visible_events, feature_definitions, read_from_log. scores: rows, snapshot, snapshot_known_at, known_at, models. model: its kind and headline numbers (churn metrics, BG/NBD and Gamma-Gamma parameters, segments). Null for other kinds.",
                            "type": ["object", "null"]
                        }
                    }
                }
            }
        },
        "paths": {
            "/healthz": {
                "get": {
                    "summary": "Liveness.",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The server is up.",
                            "content": { "application/json": { "schema": {
                                "type": "object", "properties": { "status": { "const": "ok" } }
                            } } }
                        }
                    }
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document.",
                    "security": [],
                    "responses": { "200": { "description": "OpenAPI 3.1 JSON." } }
                }
            },
            "/customer/profile": {
                "get": {
                    "summary": "One customer's features and scores as of T known at K, with proof hashes.",
                    "security": bearer,
                    "parameters": [
                        {
                            "name": "customer_id", "in": "query", "required": true,
                            "schema": { "type": "string", "maxLength": crate::api::profile::MAX_CUSTOMER_ID }
                        },
                        time_param("as_of", "T: events that happened by then (default: now). Not in the future."),
                        time_param("known_at", "K: events recorded by then (default: T). Not in the future.")
                    ],
                    "responses": guarded(json!({
                        "200": {
                            "description": "The profile.",
                            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Profile" } } }
                        },
                        "400": error_response("A parameter is missing, malformed, unknown, repeated, or a time is in the future; `parameter` names it."),
                        "404": error_response("The customer has no visible event as of T known at K.")
                    }))
                }
            },
            "/artifacts/{hash}": {
                "get": {
                    "summary": "What an artifact is: kind, times, lineage and a kind-specific summary (never the body).",
                    "security": bearer,
                    "parameters": [{
                        "name": "hash", "in": "path", "required": true,
                        "description": "A full hash or a prefix of at least 8 hex digits.",
                        "schema": { "type": "string", "pattern": "^[0-9a-fA-F]{8,64}$" }
                    }],
                    "responses": guarded(json!({
                        "200": {
                            "description": "The artifact.",
                            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Artifact" } } }
                        },
                        "400": error_response("Not a hash, or a prefix naming more than one artifact."),
                        "404": error_response("No artifact has this hash or prefix.")
                    }))
                }
            },
            "/snapshots": {
                "get": {
                    "summary": "Stored feature snapshots, oldest first.",
                    "security": bearer,
                    "parameters": [time_param("as_of_before", "Only snapshots whose as-of is not after this time.")],
                    "responses": guarded(json!({
                        "200": {
                            "description": "The snapshots.",
                            "content": { "application/json": { "schema": {
                                "type": "object",
                                "properties": {
                                    "as_of_before": nullable_string(),
                                    "snapshots": { "type": "array", "items": {
                                        "type": "object",
                                        "properties": { "hash": hash(), "as_of": { "type": "string", "format": "date-time" } }
                                    } }
                                }
                            } } }
                        },
                        "400": error_response("A parameter is malformed or unknown.")
                    }))
                }
            },
            "/export/customer_risk_scores": {
                "get": {
                    "summary": "The customer_risk_scores table of the latest score run as of T (as `cis export scores` writes it), as a download.",
                    "security": bearer,
                    "parameters": [
                        time_param("as_of", "The latest score run whose as-of is not after this time (default: now)."),
                        {
                            "name": "format", "in": "query", "required": false,
                            "description": "csv (default) or parquet.",
                            "schema": { "type": "string", "enum": ["csv", "parquet"] }
                        }
                    ],
                    "responses": guarded(json!({
                        "200": {
                            "description": "The table; header x-cis-score-hash names the score run.",
                            "content": { "text/csv": {}, "application/vnd.apache.parquet": {} }
                        },
                        "400": error_response("A parameter is malformed or unknown."),
                        "404": error_response("No score run as of T.")
                    }))
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics: requests and latency by route and status; store size, log events and batches, last ingest, latest scores.",
                    "security": bearer,
                    "responses": guarded(json!({
                        "200": { "description": "Prometheus text format 0.0.4.", "content": { "text/plain": {} } }
                    }))
                }
            }
        }
    })
}

/// The document, serialised once (a failure is returned, not cached, and not an empty body).
pub fn json_bytes() -> Result<Vec<u8>, serde_json::Error> {
    // Process-wide, not per store: the document is a constant of this build (routes, limits),
    // the same for every store a process serves.
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    if let Some(b) = BYTES.get() {
        return Ok(b.clone());
    }
    let bytes = serde_json::to_vec_pretty(&spec())?;
    Ok(BYTES.get_or_init(|| bytes).clone())
}
