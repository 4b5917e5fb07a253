import Foundation

/// Runs `body` on every file of the given directories (or files): how a fuzz target, built without libFuzzer,
/// replays a corpus in the tests or a crash a fuzzing run found.
public func replay(_ paths: some Sequence<String>, _ body: (UnsafeRawBufferPointer) -> Void) throws {
    var count = 0
    for path in paths {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: path])
        }
        let files =
            isDirectory.boolValue
            ? try FileManager.default.contentsOfDirectory(atPath: path).sorted().map { (path as NSString).appendingPathComponent($0) }
            : [path]
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else { continue }
            data.withUnsafeBytes(body)
            count += 1
        }
    }
    print("replayed \(count) inputs")
}

#if FUZZING
import CLibFuzzer

/// The entry point of a fuzz target built with `-sanitize=fuzzer -DFUZZING`: SwiftPM links an executable's `main` to
/// `<module>_main`, so each target exports that name and hands over to libFuzzer's driver, which then calls
/// `testOneInput` with every input it makes.
public func runLibFuzzer(
    argc: Int32, argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, _ testOneInput: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> Int32 {
    var count = argc
    var arguments = argv
    return LLVMFuzzerRunDriver(&count, &arguments, testOneInput)
}
#endif
