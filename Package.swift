// swift-tools-version:6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "Countersign",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "PKCS11", targets: ["PKCS11"]),
        .executable(name: "countersign", targets: ["countersign"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    ],
    targets: [
        // p11-kit's pkcs11.h. The PKCS#11 module itself is dlopen'ed at run time from a configured path.
        .systemLibrary(
            name: "CPKCS11",
            pkgConfig: "p11-kit-1",
            providers: [.apt(["libp11-kit-dev"])]
        ),
        // A Swift API over PKCS#11 with typed handles, owned attribute templates and a session pool.
        .target(
            name: "PKCS11",
            dependencies: [
                "CPKCS11",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        // Commands shared by the `countersign` executable; a library so tests can reach its pieces.
        .target(
            name: "CountersignCLI",
            dependencies: [
                "PKCS11",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "countersign",
            dependencies: ["CountersignCLI", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            swiftSettings: swiftSettings
        ),
        // Test fixtures: a fresh SoftHSM2 token per test process, a manual clock.
        .target(
            name: "TestSupport",
            dependencies: ["PKCS11"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "PKCS11Tests",
            dependencies: [
                "PKCS11",
                "TestSupport",
                "countersign",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
