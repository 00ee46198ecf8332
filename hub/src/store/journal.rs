//! The write-ahead journal: what makes a non-fsynced commit survive `kill -9`.
//!
//! Under [`FsyncPolicy::Interval`](super::FsyncPolicy) the writer commits groups to redb with
//! `Durability::None` (no fsync) and, before each such commit, appends the group's encoded
//! ops to the current journal file with one `write(2)`. Once `write` returns, the bytes are in
//! the kernel's page cache, so a process crash cannot lose them; a background thread
//! fdatasyncs the file every interval, which bounds what a power loss or kernel crash can
//! take. A *checkpoint* (an immediate redb commit, which also makes every earlier
//! non-durable commit durable) starts a new journal file and records its generation in the
//! meta table (`journal_gen`) in the same transaction; files of older generations are then
//! deleted.
//!
//! At open, [`pending`] lists the files whose generation is at or above the committed
//! `journal_gen`: exactly the groups redb may have lost. Their frames are applied again in
//! order, in one immediate transaction, before anything else runs.
//!
//! # File format
//!
//! `journal-<generation>.tj`, generation as 20 decimal digits so names sort numerically.
//! A 16-byte header — the magic `TERNJRN1` and the generation (u64 little-endian) — then
//! frames: payload length (u32 LE), CRC-32 of the payload (u32 LE), payload (postcard
//! `Vec<Op>`: one committed group). A frame that is cut short or fails its checksum ends the
//! file (a torn tail after a power loss); it is logged and counted, never applied.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{error, warn};

use super::writer::Op;
use super::{StoreError, lock};

/// First bytes of every journal file.
const MAGIC: &[u8; 8] = b"TERNJRN1";
/// Header length: magic and generation.
const HEADER_LEN: usize = 16;
/// Frame header: payload length and checksum.
const FRAME_HEADER_LEN: usize = 8;
/// A frame claiming more than this is treated as damage, not allocated.
const MAX_FRAME: usize = 1 << 30;
/// File name prefix and suffix.
const PREFIX: &str = "journal-";
const SUFFIX: &str = ".tj";

/// Generation number of a journal file; grows by one per checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Generation(pub(super) u64);

/// Path of the journal file of `generation` in `dir`.
pub(super) fn path_of(dir: &Path, generation: Generation) -> PathBuf {
    dir.join(format!("{PREFIX}{:020}{SUFFIX}", generation.0))
}

/// Journal files in `dir`, sorted by generation.
pub(super) fn list(dir: &Path) -> Result<Vec<(Generation, PathBuf)>, StoreError> {
    let io = |source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(number) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.strip_suffix(SUFFIX))
        else {
            continue;
        };
        if let Ok(g) = number.parse::<u64>() {
            out.push((Generation(g), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The groups of one journal file that can be applied, and how reading ended.
#[derive(Debug, Default)]
pub(super) struct FileFrames {
    /// Committed groups, in order.
    pub(super) groups: Vec<Vec<Op>>,
    /// Why reading stopped before the end of the file (a torn or damaged tail), if it did.
    pub(super) damage: Option<String>,
}

/// Reads every intact frame of the journal file at `path` (written for `generation`).
pub(super) fn read(path: &Path, generation: Generation) -> Result<FileFrames, StoreError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(parse(&bytes, generation))
}

/// Parses a journal file's bytes (see the module docs for the layout).
pub(super) fn parse(bytes: &[u8], generation: Generation) -> FileFrames {
    let mut out = FileFrames::default();
    let Some((header, mut rest)) = bytes.split_at_checked(HEADER_LEN) else {
        // A crash right after creating the file leaves it empty or with a partial header.
        if !bytes.is_empty() {
            out.damage = Some(format!("header cut short at {} bytes", bytes.len()));
        }
        return out;
    };
    if &header[..8] != MAGIC {
        out.damage = Some("not a journal file (bad magic)".into());
        return out;
    }
    let mut g = [0u8; 8];
    g.copy_from_slice(&header[8..]);
    if u64::from_le_bytes(g) != generation.0 {
        out.damage = Some(format!(
            "header names generation {}, file name {}",
            u64::from_le_bytes(g),
            generation.0
        ));
        return out;
    }
    let mut offset = HEADER_LEN;
    while !rest.is_empty() {
        let Some((frame_header, body)) = rest.split_at_checked(FRAME_HEADER_LEN) else {
            out.damage = Some(format!("frame header cut short at offset {offset}"));
            return out;
        };
        let len = u32::from_le_bytes([
            frame_header[0],
            frame_header[1],
            frame_header[2],
            frame_header[3],
        ]) as usize;
        let crc = u32::from_le_bytes([
            frame_header[4],
            frame_header[5],
            frame_header[6],
            frame_header[7],
        ]);
        if len > MAX_FRAME {
            out.damage = Some(format!("frame of {len} bytes at offset {offset}"));
            return out;
        }
        let Some((payload, after)) = body.split_at_checked(len) else {
            out.damage = Some(format!("frame cut short at offset {offset}"));
            return out;
        };
        if crc32fast::hash(payload) != crc {
            out.damage = Some(format!("checksum mismatch at offset {offset}"));
            return out;
        }
        match postcard::from_bytes::<Vec<Op>>(payload) {
            Ok(ops) => out.groups.push(ops),
            Err(cause) => {
                out.damage = Some(format!("undecodable frame at offset {offset}: {cause}"));
                return out;
            }
        }
        offset += FRAME_HEADER_LEN + len;
        rest = after;
    }
    out
}

/// The journal file the writer appends to.
#[derive(Debug)]
pub(super) struct JournalFile {
    generation: Generation,
    path: PathBuf,
    file: Arc<File>,
    /// Bytes written so far (header included).
    len: u64,
    /// Scratch buffer for one frame.
    frame: Vec<u8>,
}

impl JournalFile {
    /// Creates the file of `generation` (replacing a leftover of the same name).
    pub(super) fn create(dir: &Path, generation: Generation) -> Result<Self, StoreError> {
        let path = path_of(dir, generation);
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(io)?;
        let mut header = [0u8; HEADER_LEN];
        header[..8].copy_from_slice(MAGIC);
        header[8..].copy_from_slice(&generation.0.to_le_bytes());
        file.write_all(&header).map_err(io)?;
        Ok(Self {
            generation,
            path,
            file: Arc::new(file),
            len: HEADER_LEN as u64,
            frame: Vec::new(),
        })
    }

    pub(super) fn generation(&self) -> Generation {
        self.generation
    }

    /// Bytes in the file.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// The open file, for the fsync thread.
    pub(super) fn file(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }

    /// Appends one group as a frame with a single `write`; returns the length before it, for
    /// [`JournalFile::truncate`] if the group then fails to commit.
    pub(super) fn append<'a>(
        &mut self,
        ops: impl Iterator<Item = &'a Op>,
    ) -> Result<u64, StoreError> {
        let before = self.len;
        self.frame.clear();
        self.frame.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
        let refs: Vec<&Op> = ops.collect();
        self.frame =
            postcard::to_extend(&refs, std::mem::take(&mut self.frame)).map_err(|source| {
                StoreError::Encode {
                    what: "journal frame",
                    source,
                }
            })?;
        let payload_len = self.frame.len() - FRAME_HEADER_LEN;
        let len = u32::try_from(payload_len).map_err(|_| StoreError::Io {
            path: self.path.clone(),
            source: std::io::Error::other("journal frame over 4 GiB"),
        })?;
        let crc = crc32fast::hash(&self.frame[FRAME_HEADER_LEN..]);
        self.frame[..4].copy_from_slice(&len.to_le_bytes());
        self.frame[4..8].copy_from_slice(&crc.to_le_bytes());
        (&*self.file)
            .write_all(&self.frame)
            .map_err(|source| StoreError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.len += self.frame.len() as u64;
        if self.frame.capacity() > 1 << 20 {
            // One huge group should not pin its buffer for the life of the store.
            self.frame = Vec::new();
        }
        Ok(before)
    }

    /// Closes and deletes the file (a checkpoint that did not commit).
    pub(super) fn remove(self) {
        let path = self.path;
        drop(self.file);
        if let Err(cause) = std::fs::remove_file(&path) {
            warn!(path = %path.display(), %cause, "unused journal file not deleted");
        }
    }

    /// Cuts the file back to `len` (a group whose commit failed must not be replayed).
    pub(super) fn truncate(&mut self, len: u64) -> Result<(), StoreError> {
        self.file.set_len(len).map_err(|source| StoreError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.len = len;
        Ok(())
    }
}

/// Deletes the journal files of generations below `keep_from`; failures are logged (a
/// leftover file is skipped at the next open because its generation is below the meta's).
pub(super) fn delete_below(dir: &Path, keep_from: Generation) {
    let files = match list(dir) {
        Ok(files) => files,
        Err(err) => {
            warn!(cause = %err, "journal files not listed for deletion");
            return;
        }
    };
    for (g, path) in files {
        if g < keep_from
            && let Err(cause) = std::fs::remove_file(&path)
        {
            warn!(path = %path.display(), %cause, "old journal file not deleted");
        }
    }
}

/// The file the fsync thread flushes; replaced by the writer at each checkpoint.
pub(super) type SyncTarget = Arc<Mutex<Option<Arc<File>>>>;

/// Background thread that fdatasyncs the current journal file every interval.
#[derive(Debug)]
pub(super) struct Syncer {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Syncer {
    /// Starts the thread; it flushes `target` every `interval` until dropped.
    pub(super) fn spawn(target: SyncTarget, interval: Duration) -> Result<Self, std::io::Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("tern-store-fsync".into())
            .spawn(move || {
                let mut failing = false;
                while !flag.load(Ordering::Acquire) {
                    std::thread::park_timeout(interval);
                    let file = lock(&target).clone();
                    if let Some(file) = file {
                        match file.sync_data() {
                            Ok(()) => failing = false,
                            Err(cause) if !failing => {
                                failing = true;
                                error!(%cause, "journal fsync failed; acknowledged messages survive a process crash but not a power loss until it recovers");
                            }
                            Err(_) => {}
                        }
                    }
                }
            })?;
        Ok(Self {
            stop,
            handle: Some(handle),
        })
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            handle.thread().unpark();
            let _ = handle.join();
        }
    }
}
