// swift-tools-version:6.2
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
    // Our targets only: a warning in a dependency is its maintainers' to fix.
    .treatAllWarnings(as: .error),
]

let nioCore = Target.Dependency.product(name: "NIOCore", package: "swift-nio")
let nioPosix = Target.Dependency.product(name: "NIOPosix", package: "swift-nio")
let crypto = Target.Dependency.product(name: "Crypto", package: "swift-crypto")
let logging = Target.Dependency.product(name: "Logging", package: "swift-log")
let argumentParser = Target.Dependency.product(name: "ArgumentParser", package: "swift-argument-parser")

let package = Package(
    name: "Countersign",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "PKCS11", targets: ["PKCS11"]),
        .library(name: "CountersignClient", targets: ["CountersignClient"]),
        .executable(name: "countersign", targets: ["countersign"]),
        .executable(name: "countersignd", targets: ["countersignd"]),
        // A PKCS#11 module for benchmarks: a real module with a fixed delay per C_Sign, as a network HSM (docs/benchmarks.md).
        .library(name: "CountersignLatencyPKCS11", type: .dynamic, targets: ["LatencyPKCS11"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", exact: "0.2.0"),
        .package(url: "https://github.com/modelcontextprotocol/swift-sdk.git", from: "0.12.1"),
        // Without its ConfigurationSupport trait: swift-configuration has a target named Configuration, as we do.
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: ["FullFoundation"]),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth.git", from: "2.5.0"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.1"),
    ],
    targets: [
        // p11-kit's pkcs11.h. The PKCS#11 module itself is dlopen'ed at run time from a configured path.
        .systemLibrary(
            name: "CPKCS11",
            pkgConfig: "p11-kit-1",
            providers: [.apt(["libp11-kit-dev"])]
        ),
        .target(name: "LatencyPKCS11", dependencies: ["CPKCS11"], swiftSettings: swiftSettings),
        // A Swift API over PKCS#11 with typed handles, owned attribute templates and a session pool.
        .target(name: "PKCS11", dependencies: ["CPKCS11", nioCore, nioPosix, crypto, logging], swiftSettings: swiftSettings),
        // The one error vocabulary: every code with its meaning, and the failure shape every layer throws. No dependencies.
        .target(name: "CountersignCore", swiftSettings: swiftSettings),
        // The framed-TCP protocol: frames, the codec, message bodies, the handshake transcript.
        .target(name: "Wire", dependencies: ["CountersignCore", "Signing", "Policy", "CanonicalJSON", nioCore, crypto], swiftSettings: swiftSettings),
        // The canonical JSON writer of the hot path (what is stored, hashed and signed), and the strict reader.
        .target(name: "CanonicalJSON", dependencies: ["CountersignCore"], swiftSettings: swiftSettings),
        // Pure policy: currencies, money, tiers, decisions. No I/O.
        .target(name: "Policy", dependencies: ["CountersignCore", "CanonicalJSON", crypto], swiftSettings: swiftSettings),
        // The anomaly model's laboratory: a seeded generator of labelled agent traces, and their evaluation through the
        // real policy engine (`countersign policy evaluate`, docs/anomaly.md).
        .target(name: "PolicyLab", dependencies: ["Policy"], swiftSettings: swiftSettings),
        // The relying party's side of WebAuthn (passkeys): CBOR, COSE keys, authenticator data, registration and
        // assertion checks. Written by hand: no Swift package we may use verifies WebAuthn (docs/architecture.md).
        .target(name: "WebAuthn", dependencies: ["CountersignCore", crypto], swiftSettings: swiftSettings),
        // The audit log's pure parts: RFC 6962 Merkle hashing and proofs, entries, signed checkpoints.
        .target(name: "Audit", dependencies: ["CanonicalJSON", crypto], swiftSettings: swiftSettings),
        // Signed authorizations: the signer protocol, software keys, JWS and JWKS.
        .target(name: "Signing", dependencies: ["CountersignCore", "Policy", "CanonicalJSON", crypto], swiftSettings: swiftSettings),
        // The HSM backend of `Signing`: keys on a PKCS#11 token behind a circuit breaker.
        .target(name: "HSMSigning", dependencies: ["CountersignCore", "Signing", "PKCS11", crypto, logging], swiftSettings: swiftSettings),
        // The durable store: principals and key metadata (SQLite through GRDB).
        .target(name: "Ledger", dependencies: ["CountersignCore", "Policy", "Audit", .product(name: "GRDB", package: "GRDB.swift"), crypto], swiftSettings: swiftSettings),
        // The store on PostgreSQL (postgres-nio): several servers on one database, one ledger and one audit log.
        .target(
            name: "PostgresLedger",
            dependencies: [
                "CountersignCore", "CountersignConfiguration", "Ledger", "Policy", "Audit", logging, nioCore, crypto, .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"), .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: swiftSettings
        ),
        // countersignd's configuration: the YAML file read strictly (line and reason for every refusal), one duration
        // parser. The CLI's `policy check` uses it without linking the server.
        .target(
            name: "CountersignConfiguration", dependencies: ["Policy", "Audit", "Wire", nioCore, .product(name: "Yams", package: "Yams")], swiftSettings: swiftSettings
        ),
        // The small HTTP/1.1 services: the listener both HTTP ports use, and the audit log's witness (which the CLI
        // runs without the signing server).
        .target(
            name: "HTTPServices",
            dependencies: [
                "CountersignCore", "CountersignConfiguration", "Audit", nioCore, nioPosix, crypto, logging, .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "CountersignServer",
            dependencies: [
                "CountersignCore", "CountersignConfiguration", "HTTPServices", "Wire", "Policy", "Signing", "HSMSigning", "Ledger", "PostgresLedger", "Audit", "CanonicalJSON",
                "PKCS11", nioCore, nioPosix, crypto, logging,
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                "WebAuthn", .product(name: "Hummingbird", package: "hummingbird"), .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"), .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "HummingbirdAuth", package: "hummingbird-auth"), .product(name: "Mustache", package: "swift-mustache"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "CountersignClient",
            dependencies: ["Wire", nioCore, nioPosix, crypto, .product(name: "NIOSSL", package: "swift-nio-ssl")],
            swiftSettings: swiftSettings
        ),
        // Commands shared by the `countersign` executable; a library so tests can reach its pieces.
        .target(
            name: "CountersignCLI",
            dependencies: ["PKCS11", "CountersignClient", "CountersignConfiguration", "HTTPServices", "Wire", "Signing", "Policy", "PolicyLab", "Audit", "Ledger", "PostgresLedger", "CanonicalJSON", crypto, nioPosix, logging,
                .product(name: "Histogram", package: "hdrhistogram-swift"), .product(name: "NIOSSL", package: "swift-nio-ssl"), argumentParser,
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"), .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "MCP", package: "swift-sdk")],
            swiftSettings: swiftSettings
        ),
        .executableTarget(name: "countersign", dependencies: ["CountersignCLI", argumentParser], swiftSettings: swiftSettings),
        .executableTarget(
            name: "countersignd",
            dependencies: ["CountersignServer", "CountersignConfiguration", "Audit", "Policy", "Wire", "PostgresLedger", "CanonicalJSON", argumentParser, logging, nioCore, nioPosix, .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"), .product(name: "UnixSignals", package: "swift-service-lifecycle")],
            swiftSettings: swiftSettings
        ),
        // libFuzzer targets (`make fuzz` builds them with -sanitize=fuzzer,address -DFUZZING); built normally, each
        // replays the inputs in the directories it is given (the tests replay the committed corpus).
        .target(name: "CLibFuzzer", path: "fuzz/libfuzzer"),
        .target(name: "FuzzReplay", dependencies: ["CLibFuzzer"], path: "fuzz/replay", swiftSettings: swiftSettings),
        .executableTarget(
            name: "fuzz-frames", dependencies: ["Wire", "FuzzReplay", nioCore, .product(name: "NIOEmbedded", package: "swift-nio")], path: "fuzz/frames",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "fuzz-handshake", dependencies: ["Wire", "Signing", "FuzzReplay", nioCore, .product(name: "NIOEmbedded", package: "swift-nio")],
            path: "fuzz/handshake", swiftSettings: swiftSettings
        ),
        // Test fixtures: a fresh SoftHSM2 token per test process, a manual clock, a fault-injecting module.
        .target(name: "TestSupport", dependencies: ["PKCS11", "CPKCS11", "Wire"], swiftSettings: swiftSettings),
        .testTarget(
            name: "PKCS11Tests",
            dependencies: ["PKCS11", "TestSupport", "countersign", crypto, nioCore, nioPosix, .product(name: "NIOEmbedded", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "PolicyTests", dependencies: ["Policy", "PolicyLab", "TestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "WebAuthnTests", dependencies: ["WebAuthn", crypto], swiftSettings: swiftSettings),
        .testTarget(name: "AuditTests", dependencies: ["Audit", crypto], swiftSettings: swiftSettings),
        .testTarget(
            name: "WireTests",
            dependencies: ["Wire", "Signing", "Audit", "Policy", "CanonicalJSON", "TestSupport", nioCore, crypto, .product(name: "NIOEmbedded", package: "swift-nio"), .product(name: "NIOTestUtils", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CountersignTests",
            dependencies: [
                "CountersignServer", "CountersignClient", "CountersignCore", "CountersignConfiguration", "HTTPServices", "Wire", "Policy", "Signing", "HSMSigning",
                "Ledger", "PostgresLedger", "Audit", "PKCS11", "TestSupport",
                "countersign", "countersignd", crypto, nioCore, nioPosix, logging, .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            exclude: ["Scripts"],
            swiftSettings: swiftSettings
        ),
    ]
)
