// The audit log (auditors, admins, approvers). Hashes are standard base64, as in the checkpoints.

/// `AUDIT_CHECKPOINT_RESPONSE`: the latest signed checkpoint.
public struct AuditCheckpoint: Codable, Sendable, Hashable {
    /// The C2SP signed note.
    public var note: String
    public var size: Int
    /// base64 of the 32-byte root hash.
    public var rootHash: String
    public var time: Int64

    enum CodingKeys: String, CodingKey {
        case note, size
        case rootHash = "root_hash"
        case time
    }

    public init(note: String, size: Int, rootHash: String, time: Int64) {
        self.note = note
        self.size = size
        self.rootHash = rootHash
        self.time = time
    }
}

/// `AUDIT_PROOF`: an entry by its index or by the authorization it decided.
public struct AuditProofRequest: Codable, Sendable, Hashable, ValidatedRequest {
    public var index: Int64?
    public var authorizationID: String?

    enum CodingKeys: String, CodingKey {
        case index
        case authorizationID = "authorization_id"
    }

    public init(index: Int64? = nil, authorizationID: String? = nil) {
        self.index = index
        self.authorizationID = authorizationID
    }

    public func validate() throws(WireError) {
        switch (self.index, self.authorizationID) {
        case (let index?, nil) where index >= 0: break
        case (nil, let id?): try AuthorizationReference(authorizationID: id).validate()
        default: throw WireError(.invalidRequest, "give exactly one of 'index' (0 or more) and 'authorization_id'")
        }
    }
}

/// `AUDIT_PROOF_RESPONSE`: everything a third party needs to check, offline, that the entry is in the log.
public struct AuditInclusionProof: Codable, Sendable, Hashable {
    public var index: Int64
    /// The entry's canonical JSON, exactly as hashed.
    public var entry: String
    /// base64 SHA-256(0x00 ‖ entry).
    public var leafHash: String
    public var treeSize: Int
    /// base64 hashes, from the leaf up (RFC 6962 PATH).
    public var auditPath: [String]
    /// The signed checkpoint of `tree_size` entries whose root the path leads to.
    public var checkpoint: String

    enum CodingKeys: String, CodingKey {
        case index, entry
        case leafHash = "leaf_hash"
        case treeSize = "tree_size"
        case auditPath = "audit_path"
        case checkpoint
    }

    public init(index: Int64, entry: String, leafHash: String, treeSize: Int, auditPath: [String], checkpoint: String) {
        self.index = index
        self.entry = entry
        self.leafHash = leafHash
        self.treeSize = treeSize
        self.auditPath = auditPath
        self.checkpoint = checkpoint
    }
}

/// `AUDIT_CONSISTENCY`: proof that the log of `new_size` entries extends the log of `old_size`.
public struct AuditConsistencyRequest: Codable, Sendable, Hashable, ValidatedRequest {
    public var oldSize: Int
    /// Default: the latest checkpoint's size.
    public var newSize: Int?

    enum CodingKeys: String, CodingKey {
        case oldSize = "old_size"
        case newSize = "new_size"
    }

    public init(oldSize: Int, newSize: Int? = nil) {
        self.oldSize = oldSize
        self.newSize = newSize
    }

    public func validate() throws(WireError) {
        guard self.oldSize >= 1, (self.newSize ?? .max) >= self.oldSize else {
            throw WireError(.invalidRequest, "'old_size' must be at least 1 and at most 'new_size'")
        }
    }
}

/// `AUDIT_CONSISTENCY_RESPONSE`.
public struct AuditConsistencyProof: Codable, Sendable, Hashable {
    public var oldSize: Int
    public var newSize: Int
    /// base64 hashes (RFC 6962 PROOF).
    public var proof: [String]
    /// Signed checkpoints of both sizes.
    public var oldCheckpoint: String
    public var newCheckpoint: String

    enum CodingKeys: String, CodingKey {
        case oldSize = "old_size"
        case newSize = "new_size"
        case proof
        case oldCheckpoint = "old_checkpoint"
        case newCheckpoint = "new_checkpoint"
    }

    public init(oldSize: Int, newSize: Int, proof: [String], oldCheckpoint: String, newCheckpoint: String) {
        self.oldSize = oldSize
        self.newSize = newSize
        self.proof = proof
        self.oldCheckpoint = oldCheckpoint
        self.newCheckpoint = newCheckpoint
    }
}

/// `AUDIT_ENTRIES`: up to `limit` entries from `from`, for export and tail.
public struct AuditEntriesRequest: Codable, Sendable, Hashable, ValidatedRequest {
    public var from: Int64
    public var limit: Int?

    public init(from: Int64, limit: Int? = nil) {
        self.from = from
        self.limit = limit
    }

    public func validate() throws(WireError) {
        guard self.from >= 0, (1...1000).contains(self.limit ?? 100) else {
            throw WireError(.invalidRequest, "'from' must be 0 or more and 'limit' 1 to 1000")
        }
    }
}

/// `AUDIT_ENTRIES_RESPONSE`.
public struct AuditEntries: Codable, Sendable, Hashable {
    public struct Item: Codable, Sendable, Hashable {
        public var index: Int64
        /// The canonical JSON.
        public var entry: String

        public init(index: Int64, entry: String) {
            self.index = index
            self.entry = entry
        }
    }

    public var entries: [Item]
    /// Entries in the log now.
    public var size: Int

    public init(entries: [Item], size: Int) {
        self.entries = entries
        self.size = size
    }
}
