import Foundation
import TestSupport
import Testing

/// The fuzz targets, built without libFuzzer, replay the committed corpus: the harnesses compile and hold their
/// properties on every seed (`make fuzz` runs them under libFuzzer and AddressSanitizer).
@Suite("Fuzz corpus replay")
struct FuzzCorpusTests {
    @Test("fuzz-frames and fuzz-handshake replay every committed seed", arguments: [("fuzz-frames", "frames"), ("fuzz-handshake", "handshake")])
    func replay(product: String, corpus: String) async throws {
        let directory = SoftHSMFixture.repositoryRoot.appendingPathComponent("fuzz/corpus/\(corpus)")
        let seeds = try FileManager.default.contentsOfDirectory(atPath: directory.path).count
        let result = try await ProcessResult.run(executable: ProcessResult.builtProduct(product), arguments: [directory.path], environment: [:])
        #expect(result.status == 0, "\(result.standardError)")
        #expect(result.standardOutput.contains("replayed \(seeds) inputs"), "\(result.standardOutput)")
    }
}
