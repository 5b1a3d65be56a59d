//! The routes and their handlers: each reads and checks its request, asks the guard, and
//! makes one call of the library's public API.

use super::error::ApiError;
use super::guard::Caller;
use super::metrics::EnvironmentGauges;
use super::{AppState, Environment};
use crate::change::{Batch, List, SegmentChange};
use crate::entry::Details;
use crate::error::Error;
use crate::ingest::partner::Tool;
use crate::ingest::{parse_line, parse_targets, Format, Parsed};
use crate::key::{context_hash, validate_key};
use crate::snapshot::{SegmentInfo, Snapshot};
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

type App = State<Arc<AppState>>;

/// Every route, with request counting.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/api/v2/segment-targets/{integration_key}",
            post(partner_sync),
        )
        .route(
            "/api/v2/segments/{project}/{environment}",
            get(list_segments),
        )
        .route(
            "/api/v2/segments/{project}/{environment}/{segment}",
            get(get_segment).patch(patch_segment).delete(delete_segment),
        )
        .route(
            "/api/v2/segments/{project}/{environment}/{segment}/users",
            post(update_targets),
        )
        .route(
            "/api/v2/segments/{project}/{environment}/{segment}/contexts",
            post(update_targets),
        )
        .route(
            "/api/v2/segments/{project}/{environment}/{segment}/targets/{list}",
            put(replace_targets),
        )
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
        .with_state(state)
}

async fn count_request(State(app): App, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let response = next.run(request).await;
    app.metrics
        .request(&format!("{method} {route}"), response.status().as_u16());
    response
}

// ---------------------------------------------------------------------------------------------
// Request helpers

/// 415 unless the body is declared JSON.
fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON (Content-Type: application/json)",
        ))
    }
}

/// The whole body, up to the limit (413 beyond it), read within the request timeout.
async fn read_body(app: &AppState, body: Body) -> Result<Bytes, ApiError> {
    let limit = app.config.max_body_bytes;
    let read = http_body_util::Limited::new(body, limit).collect();
    match tokio::time::timeout(app.config.request_timeout, read).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "the body did not arrive within the request timeout",
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is over the limit of {limit} bytes"),
        )),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the body could not be read",
        )),
    }
}

fn utf8(body: &Bytes) -> Result<&str, ApiError> {
    std::str::from_utf8(body).map_err(|e| ApiError {
        pointer: Some(String::new()),
        ..ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            format!("the body is not UTF-8: {e}"),
        )
    })
}

fn environment<'a>(
    app: &'a AppState,
    project: &str,
    env: &str,
) -> Result<&'a Arc<Environment>, ApiError> {
    app.by_keys(project, env).ok_or_else(|| {
        ApiError::not_found(format!("no environment {env:?} in project {project:?}"))
    })
}

/// The segment key of a ref: the part before a `.g{N}` suffix.
fn key_of(segment_ref: &str) -> &str {
    match segment_ref.rsplit_once(".g") {
        Some((key, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => key,
        _ => segment_ref,
    }
}

/// The segment a route's `{segment}` names: a ref as it is, else the latest generation of
/// that key, else `{key}.g1` (to be created).
fn resolve(snapshot: &Snapshot, segment: &str) -> (String, Option<SegmentInfo>) {
    let segment_ref = if key_of(segment) != segment {
        segment.to_owned()
    } else {
        let generation = |r: &String| r.rsplit_once(".g").and_then(|(_, n)| n.parse::<u64>().ok());
        snapshot
            .generations(segment)
            .into_iter()
            .max_by_key(generation)
            .unwrap_or_else(|| format!("{segment}.g1"))
    };
    let info = snapshot.segment(&segment_ref);
    (segment_ref, info)
}

/// The checks of one change: creating the segment if new, and updating each list it touches.
fn authorize_change(
    caller: &Caller,
    env: &Environment,
    change: &SegmentChange,
    existing: Option<&SegmentInfo>,
) -> Result<(), ApiError> {
    let key = key_of(&change.segment);
    let tags = existing
        .map(|s| s.details.tags.as_slice())
        .unwrap_or_default();
    let (project, environment) = (&env.project_key, &env.environment_key);
    if existing.is_none() {
        caller.require("createSegment", project, environment, key, tags)?;
    }
    if !change.included.is_empty() || existing.is_none() {
        caller.require("updateIncluded", project, environment, key, tags)?;
    }
    if !change.excluded.is_empty() {
        caller.require("updateExcluded", project, environment, key, tags)?;
    }
    Ok(())
}

fn unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        "the store refuses writes after an I/O failure; restart the server once it is fixed",
    )
}

/// Runs a store call off the async threads; a failure for I/O marks the environment as
/// refusing writes (503 from then on).
async fn blocking<T: Send + 'static>(
    env: &Arc<Environment>,
    call: impl FnOnce(&crate::store::Store) -> Result<T, Error> + Send + 'static,
) -> Result<T, ApiError> {
    if !env.writable() {
        return Err(unavailable());
    }
    let store = env.store.clone();
    let result = tokio::task::spawn_blocking(move || call(&store))
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the write task failed",
            )
        })?;
    result.map_err(|e| {
        if matches!(e, Error::Io { .. } | Error::PreviousIo(_)) {
            env.mark_failed();
        }
        ApiError::store(&e)
    })
}

/// Writes one batch durably, counted in the metrics.
async fn write(app: &AppState, env: &Arc<Environment>, batch: Batch) -> Result<(), ApiError> {
    let ops = batch.op_count() as u64;
    let started = Instant::now();
    if !env.writable() {
        return Err(unavailable());
    }
    env.committer.write(batch).await.map_err(|e| {
        if matches!(e, Error::Io { .. } | Error::PreviousIo(_)) {
            env.mark_failed();
        }
        ApiError::store(&e)
    })?;
    app.metrics.batch(ops, started.elapsed());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Writes

async fn partner_sync(
    State(app): App,
    Path(integration_key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let tool = Tool::from_integration_key(&integration_key)
        .ok_or_else(|| ApiError::not_found(format!("no integration {integration_key:?}")))?;
    let caller = app.guard.authenticate(&headers)?;
    require_json(&headers)?;
    let body = read_body(&app, body).await?;
    let text = utf8(&body)?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ApiError::body(&crate::ingest::ParseError::Json(e.to_string())))?;
    let client_side_id = tool.environment_id(&value).ok_or_else(|| ApiError {
        pointer: Some(tool.environment_id_path().to_owned()),
        ..ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the body names no environment (a client-side ID string)",
        )
    })?;
    let env = app
        .by_client_id(client_side_id)
        .ok_or_else(|| ApiError::not_found("no environment with that client-side ID"))?
        .clone();
    let changes = match parse_line(&Format::Partner(tool), text, env.hash_keys) {
        Ok(Parsed::Changes(changes)) => changes,
        Ok(Parsed::Patches(_)) => Vec::new(),
        Err(e) => return Err(ApiError::body(&e)),
    };
    let snapshot = env.store.snapshot();
    for change in &changes {
        authorize_change(
            &caller,
            &env,
            change,
            snapshot.segment(&change.segment).as_ref(),
        )?;
    }
    if !changes.is_empty() {
        write(
            &app,
            &env,
            Batch {
                changes,
                ..Batch::default()
            },
        )
        .await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn update_targets(
    State(app): App,
    Path((project, environment_key, segment)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let env = environment(&app, &project, &environment_key)?.clone();
    let caller = app.guard.authenticate(&headers)?;
    require_json(&headers)?;
    let body = read_body(&app, body).await?;
    let text = utf8(&body)?;
    let snapshot = env.store.snapshot();
    let (segment_ref, existing) = resolve(&snapshot, &segment);
    let change =
        parse_targets(text, &segment_ref, env.hash_keys).map_err(|e| ApiError::body(&e))?;
    authorize_change(&caller, &env, &change, existing.as_ref())?;
    write(&app, &env, Batch::new().change(change)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The longest line of a bulk-replace body.
const MAX_LINE: usize = 64 << 10;
/// Keys handed to the store per message.
const KEYS_PER_CHUNK: usize = 4096;

async fn replace_targets(
    State(app): App,
    Path((project, environment_key, segment, list)): Path<(String, String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let env = environment(&app, &project, &environment_key)?.clone();
    let list = match list.as_str() {
        "included" => List::Included,
        "excluded" => List::Excluded,
        _ => return Err(ApiError::not_found("the list is `included` or `excluded`")),
    };
    let caller = app.guard.authenticate(&headers)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if !matches!(
        content_type.as_deref(),
        None | Some("text/plain" | "application/octet-stream")
    ) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a bulk replace body is text/plain: one key a line",
        ));
    }
    let snapshot = env.store.snapshot();
    let (segment_ref, existing) = resolve(&snapshot, &segment);
    let key = key_of(&segment_ref);
    let tags = existing
        .as_ref()
        .map(|s| s.details.tags.clone())
        .unwrap_or_default();
    if existing.is_none() {
        caller.require(
            "createSegment",
            &env.project_key,
            &env.environment_key,
            key,
            &tags,
        )?;
    }
    let action = if list == List::Included {
        "updateIncluded"
    } else {
        "updateExcluded"
    };
    caller.require(action, &env.project_key, &env.environment_key, key, &tags)?;

    // The body streams into the store's bulk replace through a small bounded channel: memory
    // stays constant whatever the size; a bad line or a broken body fails the replace, which
    // then changes nothing.
    // The async side waits for room without blocking its worker thread; the store's thread
    // waits for chunks.
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Result<Vec<Vec<u8>>, Error>>(4);
    let target = segment_ref.clone();
    let started = Instant::now();
    let replace = blocking(&env, move |store| {
        let chunks = std::iter::from_fn(|| receiver.blocking_recv());
        let keys = chunks.flat_map(|chunk| match chunk {
            Ok(keys) => keys.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => vec![Err(e)],
        });
        store.replace_list(&target, None, list, keys)
    });
    let hash = env.hash_keys;
    let timeout = app.config.request_timeout;
    let feed = async move {
        let mut body = body;
        let mut pending: Vec<u8> = Vec::new();
        let mut chunk: Vec<Vec<u8>> = Vec::with_capacity(KEYS_PER_CHUNK);
        let mut line_number = 0usize;
        let fail = |detail: String| Error::InvalidArgument {
            what: "body",
            detail,
        };
        let take_line =
            |line: &[u8], chunk: &mut Vec<Vec<u8>>, line_number: &mut usize| -> Result<(), Error> {
                *line_number += 1;
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.is_empty() {
                    return Ok(());
                }
                let key = if hash {
                    let text = std::str::from_utf8(line).map_err(|_| {
                        fail(format!("line {line_number}: a raw key must be UTF-8"))
                    })?;
                    context_hash(text).into_bytes()
                } else {
                    validate_key(line).map_err(|e| fail(format!("line {line_number}: {e}")))?;
                    line.to_vec()
                };
                chunk.push(key);
                Ok(())
            };
        let result: Result<(), Error> = async {
            loop {
                let frame = match tokio::time::timeout(timeout, body.frame()).await {
                    Err(_) => {
                        return Err(fail("no data arrived within the request timeout".into()))
                    }
                    Ok(None) => break,
                    Ok(Some(Err(_))) => return Err(fail("the body could not be read".into())),
                    Ok(Some(Ok(frame))) => frame,
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                let mut rest: &[u8] = &data;
                while let Some(end) = rest.iter().position(|b| *b == b'\n') {
                    let (head, tail) = rest.split_at(end);
                    if pending.is_empty() {
                        take_line(head, &mut chunk, &mut line_number)?;
                    } else {
                        pending.extend_from_slice(head);
                        let line = std::mem::take(&mut pending);
                        take_line(&line, &mut chunk, &mut line_number)?;
                    }
                    rest = tail.get(1..).unwrap_or_default();
                    if chunk.len() >= KEYS_PER_CHUNK {
                        let full =
                            std::mem::replace(&mut chunk, Vec::with_capacity(KEYS_PER_CHUNK));
                        if sender.send(Ok(full)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                pending.extend_from_slice(rest);
                if pending.len() > MAX_LINE {
                    return Err(fail(format!(
                        "line {}: longer than {MAX_LINE} bytes",
                        line_number + 1
                    )));
                }
            }
            if !pending.is_empty() {
                let line = std::mem::take(&mut pending);
                take_line(&line, &mut chunk, &mut line_number)?;
            }
            Ok(())
        }
        .await;
        let last = match result {
            Ok(()) => Ok(chunk),
            Err(e) => Err(e),
        };
        let _ = sender.send(last).await;
    };
    let (stats, ()) = tokio::join!(replace, feed);
    let stats = stats?;
    app.metrics.batch(stats.keys_read, started.elapsed());
    Ok(Json(json!({ "segment": segment_ref, "list": list.name(), "keys": stats.keys, "keysRead": stats.keys_read })).into_response())
}

// ---------------------------------------------------------------------------------------------
// Segment details

fn describe(info: &SegmentInfo) -> Value {
    json!({
        "key": key_of(&info.segment),
        "ref": info.segment,
        "kind": info.kind,
        "name": info.details.name,
        "description": info.details.description,
        "tags": info.details.tags,
        "included": info.included,
        "excluded": info.excluded,
    })
}

async fn list_segments(
    State(app): App,
    Path((project, environment_key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let env = environment(&app, &project, &environment_key)?;
    let caller = app.guard.authenticate(&headers)?;
    let items: Vec<Value> = env
        .store
        .snapshot()
        .segments()
        .iter()
        .filter(|s| {
            caller
                .require(
                    "viewSegment",
                    &env.project_key,
                    &env.environment_key,
                    key_of(&s.segment),
                    &s.details.tags,
                )
                .is_ok()
        })
        .map(describe)
        .collect();
    Ok(Json(json!({ "items": items })))
}

async fn get_segment(
    State(app): App,
    Path((project, environment_key, segment)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let env = environment(&app, &project, &environment_key)?;
    let caller = app.guard.authenticate(&headers)?;
    let (segment_ref, info) = resolve(&env.store.snapshot(), &segment);
    let info = info.ok_or_else(|| ApiError::not_found(format!("no segment {segment_ref:?}")))?;
    caller.require(
        "viewSegment",
        &env.project_key,
        &env.environment_key,
        key_of(&segment_ref),
        &info.details.tags,
    )?;
    Ok(Json(describe(&info)))
}

async fn patch_segment(
    State(app): App,
    Path((project, environment_key, segment)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let env = environment(&app, &project, &environment_key)?.clone();
    let caller = app.guard.authenticate(&headers)?;
    require_json(&headers)?;
    let body = read_body(&app, body).await?;
    let value: Value = serde_json::from_str(utf8(&body)?)
        .map_err(|e| ApiError::body(&crate::ingest::ParseError::Json(e.to_string())))?;
    let (segment_ref, info) = resolve(&env.store.snapshot(), &segment);
    let info = info.ok_or_else(|| ApiError::not_found(format!("no segment {segment_ref:?}")))?;
    let field_error = |pointer: &str, message: String| ApiError {
        pointer: Some(pointer.to_owned()),
        ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", message)
    };
    let Value::Object(fields) = value else {
        return Err(field_error(
            "",
            "the body is an object of name, description and tags".into(),
        ));
    };
    let mut details: Details = info.details.clone();
    let key = key_of(&segment_ref);
    let (p, e) = (&env.project_key, &env.environment_key);
    for (field, value) in &fields {
        let pointer = format!("/{field}");
        match field.as_str() {
            "name" | "description" => {
                let text = match value {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    _ => {
                        return Err(field_error(
                            &pointer,
                            format!("{field} is a string or null"),
                        ))
                    }
                };
                if field == "name" {
                    caller.require("updateName", p, e, key, &info.details.tags)?;
                    details.name = text;
                } else {
                    caller.require("updateDescription", p, e, key, &info.details.tags)?;
                    details.description = text;
                }
            }
            "tags" => {
                let tags = value
                    .as_array()
                    .and_then(|a| {
                        a.iter()
                            .map(|t| t.as_str().map(str::to_owned))
                            .collect::<Option<Vec<_>>>()
                    })
                    .ok_or_else(|| field_error(&pointer, "tags is an array of strings".into()))?;
                caller.require("updateTags", p, e, key, &info.details.tags)?;
                details.tags = tags;
            }
            "key" | "ref" => {
                return Err(field_error(
                    &pointer,
                    "a segment's key never changes".into(),
                ));
            }
            _ => {
                return Err(field_error(
                    &pointer,
                    "unknown field; the fields here are name, description, tags".into(),
                ));
            }
        }
    }
    let target = segment_ref.clone();
    blocking(&env, move |store| store.set_details(&target, details)).await?;
    let info = env
        .store
        .snapshot()
        .segment(&segment_ref)
        .ok_or_else(|| ApiError::not_found(format!("no segment {segment_ref:?}")))?;
    Ok(Json(describe(&info)))
}

async fn delete_segment(
    State(app): App,
    Path((project, environment_key, segment)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let env = environment(&app, &project, &environment_key)?.clone();
    let caller = app.guard.authenticate(&headers)?;
    let (segment_ref, info) = resolve(&env.store.snapshot(), &segment);
    let info = info.ok_or_else(|| ApiError::not_found(format!("no segment {segment_ref:?}")))?;
    caller.require(
        "deleteSegment",
        &env.project_key,
        &env.environment_key,
        key_of(&segment_ref),
        &info.details.tags,
    )?;
    blocking(&env, move |store| store.delete_segment(&segment_ref)).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Operators

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn status(State(app): App) -> Json<Value> {
    let now = now_ms();
    let stale_ms = app.config.stale_after.as_millis() as u64;
    let mut healthy = true;
    let mut environments = serde_json::Map::new();
    for env in &app.environments {
        let synced = env.store.snapshot().metadata().synchronized_on;
        let stale = synced.is_none_or(|at| now.saturating_sub(at) > stale_ms);
        let available = env.writable();
        healthy &= available && !stale;
        environments.insert(
            env.client_side_id.clone(),
            json!({
                "projectKey": env.project_key,
                "environmentKey": env.environment_key,
                "bigSegmentStatus": {
                    "available": available,
                    "potentiallyStale": stale,
                    "lastSynchronizedOn": synced,
                },
            }),
        );
    }
    Json(json!({
        "status": if healthy { "healthy" } else { "degraded" },
        "environments": environments,
    }))
}

async fn metrics(State(app): App) -> Response {
    let now = now_ms();
    let gauges: Vec<EnvironmentGauges> = app
        .environments
        .iter()
        .map(|env| {
            let snapshot = env.store.snapshot();
            EnvironmentGauges {
                environment: env.client_side_id.clone(),
                sync_age_seconds: snapshot
                    .metadata()
                    .synchronized_on
                    .map(|at| now.saturating_sub(at) as f64 / 1000.0),
                store_bytes: crate::verify::stats(env.store.dir())
                    .map_or(0, |s| s.table_bytes + s.log_bytes),
                segments: snapshot.segment_count() as u64,
            }
        })
        .collect();
    let lookups = app.redis_lookups.get().map(|f| (f.0)());
    let text = app.metrics.render(&gauges, lookups);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
