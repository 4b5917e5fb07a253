// libFuzzer target for the JSON readers every request body passes through (Sources/CanonicalJSON), compiled
// together with them by `make fuzz` (swiftc -sanitize=fuzzer,address). Beyond "no crash, no sanitizer
// report", it checks the property the server depends on: whatever the fast scanner accepts, the strict
// decoder accepts too and reads to the same value.

/// A body with the shapes of the protocol's: strings, integers, an optional, a nested object, an array.
struct Probe: JSONScannable, Equatable {
    struct Item: JSONScannable, Equatable {
        var name: String
        var count: Int64

        enum CodingKeys: String, CodingKey { case name, count }

        static func scan(_ scanner: inout JSONScanner) -> Item? {
            var name: String?, count: Int64?
            guard
                scanner.object({ scanner, key in
                    switch key {
                    case "name": scanner.read(&name)
                    case "count": scanner.read(&count)
                    default: false
                    }
                }), let name, let count
            else { return nil }
            return Item(name: name, count: count)
        }
    }

    var id: String
    var amount: Int64
    var note: String?
    var item: Item
    var items: [Item]?

    enum CodingKeys: String, CodingKey { case id, amount, note, item, items }

    static func scan(_ scanner: inout JSONScanner) -> Probe? {
        var id: String?, amount: Int64?, note: String?, item: Item?, items: [Item]?
        guard
            scanner.object({ scanner, key in
                switch key {
                case "id": scanner.read(&id)
                case "amount": scanner.read(&amount)
                case "note": scanner.readOptional(&note)
                case "item": scanner.read(&item)
                case "items": scanner.readOptional(&items)
                default: false
                }
            }), let id, let amount, let item
        else { return nil }
        return Probe(id: id, amount: amount, note: note, item: item, items: items)
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer?, _ count: Int) -> CInt {
    guard let start else { return 0 }
    let bytes = UnsafeRawBufferPointer(start: start, count: count)
    _ = try? StrictJSONParser.parse(bytes)
    let strict = try? StrictJSONDecoder().decode(Probe.self, from: bytes)
    if let fast = Probe.scan(bytes: bytes) {
        guard fast == strict else {
            fatalError("the fast scanner read \(fast), the strict decoder \(String(describing: strict))")
        }
    }
    return 0
}
