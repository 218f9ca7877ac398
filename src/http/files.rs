//! Attachments (scope `file`): `POST /api/v1/file` (multipart, streamed into the attachment
//! storage: files on disk or chunks in the database) and `GET /api/v1/file?attachment_id=`
//! (streamed back, with Range, ETag and Content-Disposition).
//!
//! Uploads never overwrite each other (a timestamped, random, sanitised stored name, a file
//! opened with `create_new`), are limited while streaming (413, and what was written is
//! removed), and get their type from their bytes. Downloads only ever read names that came from
//! the database for a well-formed attachment id, so no request can read outside the storage.

use axum::body::Body;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::file_headers::{content_disposition, parse_range, served_as};
use super::params::Params;
use crate::app::AppState;
use crate::attachments::{SNIFF_BYTES, classify, sanitize_filename};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ok};
use crate::store::{AttachmentRecord, now_micros};

pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<Response> {
    let limit = state.config.files.max_upload_bytes;
    // A declared length far beyond the limit is refused before reading anything.
    if let Some(len) =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok())
        && len > limit.saturating_add(1024 * 1024)
    {
        return Err(too_large(limit));
    }
    let mut multipart =
        multipart.map_err(|e| ApiError::bad_request(format!("Invalid multipart body: {}", e.body_text())))?;
    loop {
        let field = multipart.next_field().await.map_err(multipart_error)?;
        let Some(mut field) = field else {
            return Err(ApiError::bad_request("Missing key: file"));
        };
        if field.name() != Some("file") {
            continue;
        }
        let original = sanitize_filename(field.file_name().unwrap_or(""));
        let declared = field.content_type().map(str::to_string);
        let attachment_id = uuid::Uuid::new_v4().to_string();
        // Dropped unfinished (413, a broken body), the writer removes what it wrote.
        let mut blob = state.agent.blobs.create(&attachment_id, &original).await.map_err(storage_error)?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut head: Vec<u8> = Vec::with_capacity(SNIFF_BYTES);
        while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
            size += chunk.len() as u64;
            if size > limit {
                return Err(too_large(limit));
            }
            if head.len() < SNIFF_BYTES {
                let take = (SNIFF_BYTES - head.len()).min(chunk.len());
                head.extend_from_slice(&chunk[..take]);
            }
            hasher.update(&chunk);
            blob.write(&chunk).await.map_err(storage_error)?;
        }
        let stored = blob.finish().await.map_err(storage_error)?;
        let (mime, kind) = classify(&head, declared.as_deref(), &original);
        let rec = AttachmentRecord {
            attachment_id,
            stored_name: stored.clone(),
            original_name: original.clone(),
            kind: kind.to_string(),
            mime_type: mime,
            size: size as i64,
            sha256: hex::encode(hasher.finalize()),
            created_at: now_micros(),
            owner: Some(caller.owner_tag()),
        };
        // The rest of the body must be well-formed too, as when AstrBot parses the whole form:
        // later parts are read and dropped, and a broken one refuses the upload.
        drop(field);
        if let Err(e) = drain(&mut multipart).await {
            state.agent.blobs.remove(&rec).await;
            return Err(e);
        }
        if let Err(e) = state.agent.record_upload(&rec).await {
            state.agent.blobs.remove(&rec).await;
            return Err(e.into());
        }
        tracing::info!(attachment.id = %rec.attachment_id, size, kind, "attachment stored");
        return Ok(ok(json!({
            "attachment_id": rec.attachment_id,
            "filename": original,
            "stored_filename": stored,
            "type": kind,
            "mime_type": rec.mime_type,
            "size": size,
        })));
    }
}

/// Reads the parts left in a multipart body, dropping their bytes.
async fn drain(multipart: &mut Multipart) -> ApiResult<()> {
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        while field.chunk().await.map_err(multipart_error)?.is_some() {}
    }
    Ok(())
}

fn too_large(limit: u64) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("File too large (limit {limit} bytes)"))
}

/// A full disk (or quota) is the client's to know about, and to retry later: 507. Anything else
/// is ours (500, the cause in the log).
fn storage_error(e: std::io::Error) -> ApiError {
    match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            tracing::error!(error = %e, "an upload could not be stored: no space left");
            ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "Not enough storage space for the upload")
        }
        _ => ApiError::internal(e),
    }
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")
    } else {
        ApiError::bad_request(format!("Invalid multipart body: {}", e.body_text()))
    }
}

pub async fn download(
    State(state): State<AppState>,
    caller: Caller,
    q: Params,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let id = q.required("attachment_id")?;
    serve_by_id(&state, &caller, id, &headers).await
}

/// `GET /api/v1/files/{attachment_id}/content` (and `/api/v1/files/{attachment_id}`), the
/// ChatUI's way of showing an attachment.
pub async fn download_by_path(
    State(state): State<AppState>,
    caller: Caller,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    serve_by_id(&state, &caller, id.trim(), &headers).await
}

/// `GET /api/v1/files/content?filename=` and `GET /api/chat/get_file?filename=`: an attachment
/// by its stored name, as AstrBot's history parts carry it. Only names in the database are
/// opened, and only the caller's own.
pub async fn download_by_name(
    State(state): State<AppState>,
    caller: Caller,
    q: Params,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let name = q.required("filename")?;
    if name.contains(['/', '\\', '\0']) || name.starts_with('.') {
        return Err(ApiError::bad_request("Invalid file path"));
    }
    let rec = state
        .agent
        .attachment_by_name_for(&caller, name)
        .await?
        .ok_or_else(|| ApiError::not_found("File access error"))?;
    serve_record(&state, &rec, &headers).await
}

async fn serve_by_id(state: &AppState, caller: &Caller, id: &str, headers: &HeaderMap) -> ApiResult<Response> {
    // Only our own ids are looked up; anything else cannot name a file.
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(ApiError::not_found("Attachment not found"));
    }
    // Another key's attachment is indistinguishable from an unknown one.
    let rec =
        state.agent.attachment_for(caller, id).await?.ok_or_else(|| ApiError::not_found("Attachment not found"))?;
    serve_record(state, &rec, headers).await
}

/// Streams a stored attachment with its safe headers, honouring If-None-Match and Range.
async fn serve_record(state: &AppState, rec: &AttachmentRecord, headers: &HeaderMap) -> ApiResult<Response> {
    let blobs = &state.agent.blobs;
    let len = blobs.len(rec).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidData {
            tracing::error!(attachment.id = %rec.attachment_id, "refusing a stored name that is not a plain file name");
        }
        ApiError::not_found("File access error")
    })?;
    let etag = format!("\"{}\"", rec.sha256);
    let last_modified = chrono::DateTime::<chrono::Utc>::from_timestamp_micros(rec.created_at)
        .unwrap_or_default()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();

    let (content_type, disposition) = served_as(&rec.mime_type);
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CONTENT_SECURITY_POLICY, "sandbox")
        .header(header::ETAG, &etag)
        .header(header::LAST_MODIFIED, &last_modified)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "private, max-age=0")
        .header(header::CONTENT_DISPOSITION, content_disposition(disposition, &rec.original_name));
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        return builder.status(StatusCode::NOT_MODIFIED).body(Body::empty()).map_err(ApiError::internal);
    }
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    // If-Range with another validator means: send the whole (changed) file.
    let if_range_ok = headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()).is_none_or(|v| v.trim() == etag);
    match parse_range(range.filter(|_| if_range_ok), len) {
        Err(_) => Ok((
            StatusCode::RANGE_NOT_SATISFIABLE,
            [(header::CONTENT_RANGE, format!("bytes */{len}"))],
            ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "Range not satisfiable"),
        )
            .into_response()),
        Ok(Some((start, end))) => {
            let n = end - start + 1;
            let body = Body::from_stream(blobs.stream(rec, start, n).await.map_err(ApiError::internal)?);
            builder = builder
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_LENGTH, n)
                .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"));
            builder.body(body).map_err(ApiError::internal)
        }
        Ok(None) => {
            let body = Body::from_stream(blobs.stream(rec, 0, len).await.map_err(ApiError::internal)?);
            builder.header(header::CONTENT_LENGTH, HeaderValue::from(len)).body(body).map_err(ApiError::internal)
        }
    }
}
