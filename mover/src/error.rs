//! One error type for the mover; every variant names the check that refused.

use custody_types::FailedCheck;

/// Why a move, a checkpoint or a message was refused.
#[derive(Debug, thiserror::Error)]
pub enum MoverError {
    // --- safetensors ---
    #[error("safetensors header: {0}")]
    SafetensorsHeader(String),
    #[error("safetensors tensor {tensor:?} has unknown dtype {dtype:?}")]
    UnknownDtype { tensor: String, dtype: String },
    #[error("safetensors offsets: {0}")]
    SafetensorsOffsets(String),

    // --- chips ---
    #[error("{0}")]
    ChipMismatch(#[from] crate::chips::ChipMismatch),
    #[error("unrecognised GPU model {0:?}")]
    UnknownChip(String),

    // --- manifest ---
    #[error("checkpoint path refused: {0}")]
    ManifestPath(String),
    #[error("manifest: {0}")]
    ManifestFormat(String),
    #[error("manifest digest does not match: {0}")]
    ManifestDigest(String),
    #[error("source checkpoint changed since its manifest: {0}")]
    ManifestChanged(String),
    #[error("file {path:?} does not match its manifest digest")]
    FileDigest { path: String },

    /// A COSE_Sign1 whose protected content type is not the one its purpose requires
    /// (a key that signs several message types must never have one read as another).
    #[error("protected content type {found}, want {want}")]
    ContentType { want: &'static str, found: String },

    /// The directory that holds the agent's admin socket is not one only the agent can
    /// enter (a symlink, not a directory, another owner, or open to group or others).
    #[error("admin socket directory {path}: {why}")]
    AdminSocketDir { path: String, why: String },

    // --- ticket ---
    #[error("ticket: {0}")]
    TicketFormat(String),
    #[error("ticket signature: {0}")]
    TicketSignature(String),
    #[error("ticket expired or not yet valid: valid {issued_at}..{expires_at}, now {now}")]
    TicketExpired {
        issued_at: i64,
        expires_at: i64,
        now: i64,
    },
    #[error("ticket is for {ticket}, not for this node: {why}")]
    TicketDestination { ticket: String, why: String },
    #[error("ticket {0} was already used")]
    TicketReplayed(String),

    // --- key wrapping ---
    #[error(
        "the wrapped data key does not open with this node's key (not the ticketed recipient, or tampered)"
    )]
    WrongRecipient,
    #[error("key wrapping: {0}")]
    KeyWrap(String),

    // --- stream ---
    #[error("stream header: {0}")]
    StreamHeader(String),
    #[error("chunk {index} failed authentication (tampered, reordered, duplicated or wrong key)")]
    ChunkAuthentication { index: u64 },
    #[error("chunk {got} arrived where chunk {want} was expected")]
    ChunkSequence { want: u64, got: u64 },
    #[error("chunk {index} has {got} bytes, expected {want}")]
    ChunkLength { index: u64, got: usize, want: usize },
    #[error("stream ended after {got} of {want} chunks (truncated)")]
    StreamTruncated { got: u64, want: u64 },
    #[error("chunk {index} after the last chunk ({last})")]
    StreamExtra { index: u64, last: u64 },

    // --- receipt ---
    #[error("receipt: {0}")]
    ReceiptFormat(String),
    #[error("receipt signature does not verify")]
    ReceiptSignature,

    // --- export file ---
    #[error("export file: {0}")]
    ExportFormat(String),

    // --- agent-to-agent transport ---
    #[error("move protocol: {0}")]
    Wire(String),
    #[error("the destination refused: {check}: {detail}")]
    Refused { check: String, detail: String },
    #[error("ticket source: {0}")]
    TicketSource(String),
    #[error("a transfer of ticket {0} is already running")]
    TransferActive(String),
    /// A bulk connection that is not bound to the transfer's authenticated control
    /// connection (wrong or missing exporter token, no transfer waiting for it).
    #[error("bulk connection not bound to the control session: {0}")]
    BulkBinding(String),

    // --- deny list ---
    /// The verifier's deny list did not verify or decode.
    #[error("deny list: {0}")]
    DenyList(String),
    /// The verifier listed the node as removed or revoked.
    #[error("node {node} was {} at {since} (the verifier's deny list)", denial.as_str())]
    NodeDenied {
        node: String,
        denial: crate::deny::Denial,
        since: i64,
    },

    // --- staging / files ---
    #[error("staging: {0}")]
    Staging(String),
    #[error("I/O on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl FailedCheck for MoverError {
    fn check(&self) -> &'static str {
        match self {
            Self::SafetensorsHeader(_) => "safetensors_header",
            Self::UnknownDtype { .. } => "safetensors_dtype",
            Self::SafetensorsOffsets(_) => "safetensors_offsets",
            Self::ChipMismatch(_) => "chip_mismatch",
            Self::UnknownChip(_) => "chip_unknown",
            Self::ManifestPath(_) => "manifest_path",
            Self::ManifestFormat(_) => "manifest_format",
            Self::ManifestDigest(_) => "manifest_digest",
            Self::ManifestChanged(_) => "manifest_changed",
            Self::FileDigest { .. } => "file_digest",
            Self::ContentType { .. } => "content_type",
            Self::AdminSocketDir { .. } => "admin_socket_dir",
            Self::TicketFormat(_) => "ticket_format",
            Self::TicketSignature(_) => "ticket_signature",
            Self::TicketExpired { .. } => "ticket_expired",
            Self::TicketDestination { .. } => "ticket_destination",
            Self::TicketReplayed(_) => "ticket_replayed",
            Self::WrongRecipient => "wrong_recipient",
            Self::KeyWrap(_) => "key_wrap",
            Self::StreamHeader(_) => "stream_header",
            Self::ChunkAuthentication { .. } => "chunk_authentication",
            Self::ChunkSequence { .. } => "chunk_sequence",
            Self::ChunkLength { .. } => "chunk_length",
            Self::StreamTruncated { .. } => "stream_truncated",
            Self::StreamExtra { .. } => "stream_extra",
            Self::ReceiptFormat(_) => "receipt_format",
            Self::ReceiptSignature => "receipt_signature",
            Self::ExportFormat(_) => "export_format",
            Self::Wire(_) => "wire_format",
            Self::Refused { .. } => "destination_refused",
            Self::TicketSource(_) => "ticket_source",
            Self::TransferActive(_) => "transfer_active",
            Self::BulkBinding(_) => "bulk_binding",
            Self::DenyList(_) => "deny_list",
            Self::NodeDenied {
                denial: crate::deny::Denial::Removed,
                ..
            } => "node_removed",
            Self::NodeDenied {
                denial: crate::deny::Denial::Revoked,
                ..
            } => "revoked",
            Self::Staging(_) => "staging",
            Self::Io { .. } => "io",
        }
    }
}

impl MoverError {
    /// An I/O error with the path it happened on.
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
