//! Where attachment bytes live: files under `<data_dir>/attachments` (the default with SQLite),
//! or the database itself in chunks (the default with PostgreSQL, so that any instance serves
//! any attachment without a shared disk). Both stream: an upload is written chunk by chunk as it
//! arrives and a download read chunk by chunk as it is sent, so memory per transfer is one
//! chunk whatever the file's size. Nothing here knows about HTTP.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use crate::store::copy::CHUNK_BYTES;
use crate::store::{AttachmentRecord, Store};

/// A stream of an attachment's bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// The attachment storage of this installation.
pub enum Blobs {
    /// One file per attachment in this directory.
    Local(PathBuf),
    /// Chunks in the database; documents that a tool must read from a file are copied to
    /// `tmp` for the time of the reading.
    Database { store: Arc<dyn Store>, tmp: PathBuf },
}

fn db_error(e: crate::store::StoreError) -> io::Error {
    io::Error::other(e.to_string())
}

/// A stored name: timestamped, random, the sanitised original last. Never a path.
fn new_name(original: &str) -> String {
    let mut r = [0u8; 2];
    crate::util::fill_random(&mut r);
    let stamp = chrono::Utc::now().format("%Y%m%d%H%M%S%3f");
    format!("{stamp}_{}_{original}", hex::encode(r))
}

/// Refuses a stored name that is not a plain file name (it only ever comes from the database).
fn plain(name: &str) -> io::Result<&str> {
    if name.is_empty() || name.contains(['/', '\\', '\0']) || name.starts_with('.') {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "stored name is not a plain file name"));
    }
    Ok(name)
}

impl Blobs {
    /// Whether bytes are kept in the database.
    pub fn in_database(&self) -> bool {
        matches!(self, Blobs::Database { .. })
    }

    /// Starts storing a new attachment under a unique stored name (never replacing another).
    pub async fn create(&self, attachment_id: &str, original: &str) -> io::Result<BlobWriter> {
        match self {
            Blobs::Local(dir) => {
                tokio::fs::create_dir_all(dir).await?;
                for _ in 0..8 {
                    let name = new_name(original);
                    let path = dir.join(&name);
                    match tokio::fs::OpenOptions::new().write(true).create_new(true).open(&path).await {
                        Ok(file) => {
                            return Ok(BlobWriter { stored_name: name, to: Target::File { file, path: Some(path) } });
                        }
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(io::Error::other("could not find a free file name"))
            }
            Blobs::Database { store, .. } => Ok(BlobWriter {
                stored_name: new_name(original),
                to: Target::Db {
                    store: store.clone(),
                    id: attachment_id.to_string(),
                    buf: Vec::with_capacity(CHUNK_BYTES),
                    next: 0,
                    done: false,
                },
            }),
        }
    }

    /// The stored length, or `NotFound` when the bytes are gone.
    pub async fn len(&self, rec: &AttachmentRecord) -> io::Result<u64> {
        match self {
            Blobs::Local(dir) => Ok(tokio::fs::metadata(dir.join(plain(&rec.stored_name)?)).await?.len()),
            Blobs::Database { store, .. } => {
                if rec.size > 0 && store.get_chunk(&rec.attachment_id, 0).await.map_err(db_error)?.is_none() {
                    return Err(io::ErrorKind::NotFound.into());
                }
                Ok(rec.size.max(0) as u64)
            }
        }
    }

    pub async fn exists(&self, rec: &AttachmentRecord) -> bool {
        self.len(rec).await.is_ok()
    }

    /// Every byte (callers bound the size first).
    pub async fn read_all(&self, rec: &AttachmentRecord) -> io::Result<Vec<u8>> {
        match self {
            Blobs::Local(dir) => tokio::fs::read(dir.join(plain(&rec.stored_name)?)).await,
            Blobs::Database { store, .. } => {
                let mut out = Vec::with_capacity(rec.size.max(0) as usize);
                let mut idx = 0;
                while (out.len() as i64) < rec.size {
                    let Some(chunk) = store.get_chunk(&rec.attachment_id, idx).await.map_err(db_error)? else {
                        return Err(io::Error::new(io::ErrorKind::NotFound, "attachment chunk missing"));
                    };
                    out.extend_from_slice(&chunk);
                    idx += 1;
                }
                Ok(out)
            }
        }
    }

    /// `len` bytes from `start`, read as they are sent.
    pub async fn stream(&self, rec: &AttachmentRecord, start: u64, len: u64) -> io::Result<ByteStream> {
        match self {
            Blobs::Local(dir) => {
                let mut file = tokio::fs::File::open(dir.join(plain(&rec.stored_name)?)).await?;
                file.seek(io::SeekFrom::Start(start)).await?;
                Ok(Box::pin(tokio_util::io::ReaderStream::new(file.take(len))))
            }
            Blobs::Database { store, .. } => {
                let chunk = CHUNK_BYTES as u64;
                let state =
                    (store.clone(), rec.attachment_id.clone(), (start / chunk) as i32, (start % chunk) as usize, len);
                Ok(Box::pin(futures_util::stream::unfold(state, |(store, id, idx, skip, left)| async move {
                    if left == 0 {
                        return None;
                    }
                    let item = match store.get_chunk(&id, idx).await {
                        Ok(Some(data)) if data.len() > skip => {
                            let end = (skip as u64 + left).min(data.len() as u64) as usize;
                            let bytes = Bytes::from(data).slice(skip..end);
                            let left = left - bytes.len() as u64;
                            return Some((Ok(bytes), (store, id, idx + 1, 0, left)));
                        }
                        Ok(_) => io::Error::new(io::ErrorKind::UnexpectedEof, "attachment chunk missing"),
                        Err(e) => db_error(e),
                    };
                    // An error ends the stream after it is reported.
                    Some((Err(item), (store, id, idx, 0, 0)))
                })))
            }
        }
    }

    /// A file holding the attachment, for tools that read files (document extraction): the
    /// stored file itself, or a temporary copy removed when the guard is dropped.
    pub async fn local_file(&self, rec: &AttachmentRecord) -> io::Result<LocalFile> {
        match self {
            Blobs::Local(dir) => Ok(LocalFile { path: dir.join(plain(&rec.stored_name)?), temporary: false }),
            Blobs::Database { tmp, .. } => {
                tokio::fs::create_dir_all(tmp).await?;
                let mut r = [0u8; 8];
                crate::util::fill_random(&mut r);
                let path = tmp.join(format!("doc-{}", hex::encode(r)));
                let guard = LocalFile { path, temporary: true };
                let mut file = tokio::fs::File::create(&guard.path).await?;
                let mut s = self.stream(rec, 0, rec.size.max(0) as u64).await?;
                use futures_util::StreamExt;
                while let Some(chunk) = s.next().await {
                    file.write_all(&chunk?).await?;
                }
                file.flush().await?;
                Ok(guard)
            }
        }
    }

    /// Removes an attachment's bytes (its row is the caller's to remove).
    pub async fn remove(&self, rec: &AttachmentRecord) {
        match self {
            Blobs::Local(dir) => {
                if let Ok(name) = plain(&rec.stored_name) {
                    let _ = tokio::fs::remove_file(dir.join(name)).await;
                }
            }
            Blobs::Database { store, .. } => {
                if let Err(e) = store.delete_chunks(&rec.attachment_id).await {
                    tracing::warn!(attachment.id = %rec.attachment_id, error = %e, "removing attachment bytes failed");
                }
            }
        }
    }

    /// Moves files of a local attachments directory into the database (`copy-db`): every
    /// attachment of `store` without stored chunks whose file is in `dir`. Returns how many.
    pub async fn import_dir(store: &Arc<dyn Store>, dir: &Path) -> io::Result<u64> {
        let mut moved = 0;
        let mut offset = 0;
        loop {
            let rows = store.export_rows(crate::store::Table::Attachments, offset, 500).await.map_err(db_error)?;
            let crate::store::Rows::Attachments(recs) = rows else { return Ok(moved) };
            if recs.is_empty() {
                return Ok(moved);
            }
            offset += recs.len() as i64;
            for rec in recs {
                if store.get_chunk(&rec.attachment_id, 0).await.map_err(db_error)?.is_some() {
                    continue;
                }
                let Ok(mut file) = tokio::fs::File::open(dir.join(plain(&rec.stored_name)?)).await else {
                    tracing::warn!(attachment.id = %rec.attachment_id, "no file for this attachment in the attachments directory");
                    continue;
                };
                let mut buf = vec![0u8; CHUNK_BYTES];
                let mut idx = 0;
                loop {
                    let n = read_full(&mut file, &mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    store.put_chunk(&rec.attachment_id, idx, &buf[..n]).await.map_err(db_error)?;
                    idx += 1;
                }
                moved += 1;
            }
        }
    }
}

async fn read_full(file: &mut tokio::fs::File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let r = file.read(&mut buf[n..]).await?;
        if r == 0 {
            break;
        }
        n += r;
    }
    Ok(n)
}

/// A readable file with an attachment's bytes; a temporary copy is removed on drop.
pub struct LocalFile {
    pub path: PathBuf,
    temporary: bool,
}

impl Drop for LocalFile {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

enum Target {
    /// `path` is `None` once the file is complete (it is then kept).
    File {
        file: tokio::fs::File,
        path: Option<PathBuf>,
    },
    Db {
        store: Arc<dyn Store>,
        id: String,
        buf: Vec<u8>,
        next: i32,
        done: bool,
    },
}

/// An attachment being stored. Dropped before [`BlobWriter::finish`], what was written is
/// removed again (a failed or oversized upload leaves nothing behind).
pub struct BlobWriter {
    stored_name: String,
    to: Target,
}

impl BlobWriter {
    pub fn stored_name(&self) -> &str {
        &self.stored_name
    }

    pub async fn write(&mut self, mut data: &[u8]) -> io::Result<()> {
        match &mut self.to {
            Target::File { file, .. } => file.write_all(data).await,
            Target::Db { store, id, buf, next, .. } => {
                while !data.is_empty() {
                    let take = (CHUNK_BYTES - buf.len()).min(data.len());
                    buf.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if buf.len() == CHUNK_BYTES {
                        store.put_chunk(id, *next, buf).await.map_err(db_error)?;
                        *next += 1;
                        buf.clear();
                    }
                }
                Ok(())
            }
        }
    }

    /// Makes the bytes durable; returns the stored name.
    pub async fn finish(mut self) -> io::Result<String> {
        match &mut self.to {
            Target::File { file, path } => {
                file.flush().await?;
                file.sync_data().await?;
                *path = None;
            }
            Target::Db { store, id, buf, next, done } => {
                if !buf.is_empty() {
                    store.put_chunk(id, *next, buf).await.map_err(db_error)?;
                }
                *done = true;
            }
        }
        Ok(std::mem::take(&mut self.stored_name))
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        match &mut self.to {
            Target::File { path: Some(p), .. } => {
                let _ = std::fs::remove_file(p);
            }
            Target::Db { store, id, next, done: false, .. } if *next > 0 => {
                // Chunks already written: removed in the background (no await in drop).
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    let (store, id) = (store.clone(), std::mem::take(id));
                    rt.spawn(async move {
                        let _ = store.delete_chunks(&id).await;
                    });
                }
            }
            _ => {}
        }
    }
}
