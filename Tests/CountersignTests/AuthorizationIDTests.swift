import CountersignCore
import Testing

@testable import CountersignServer

/// The layout of authorization ids: the issue time to the millisecond, then random bytes.
@Suite("Authorization ids")
struct AuthorizationIDTests {
    /// Random bytes that count up from `first`, so each id's random part is known.
    static func counting(from first: UInt8) -> RandomSource {
        RandomSource { count in (0..<count).map { first &+ UInt8($0) } }
    }

    @Test("an id is the second (4 bytes) and the millisecond (2 bytes), big-endian, then 10 random bytes")
    func layout() throws {
        let id = Authorizer.authorizationID(at: 1_796_234_473_123, random: Self.counting(from: 1))
        let bytes = try #require(Base64URL.decode(id))
        #expect(bytes == [0x6B, 0x10, 0x5C, 0xE9, 0x00, 0x7B, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
        #expect(id.count == 22)
        // The last millisecond of a second still belongs to that second.
        let last = try #require(Base64URL.decode(Authorizer.authorizationID(at: 1_796_234_473_999, random: Self.counting(from: 0))))
        #expect(Array(last.prefix(6)) == [0x6B, 0x10, 0x5C, 0xE9, 0x03, 0xE7])
    }

    @Test("ids issued in the same millisecond share their first eight characters, so they sit together in an index")
    func locality() {
        let first = Authorizer.authorizationID(at: 1_796_234_473_500, random: Self.counting(from: 0))
        let second = Authorizer.authorizationID(at: 1_796_234_473_500, random: Self.counting(from: 200))
        let later = Authorizer.authorizationID(at: 1_796_234_473_501, random: Self.counting(from: 0))
        #expect(first != second)
        #expect(first.prefix(8) == second.prefix(8))
        #expect(first.prefix(8) != later.prefix(8))
    }

    @Test("a wall clock's second is its milliseconds rounded down, before 1970 too")
    func seconds() {
        #expect(WallClock.seconds(of: 1_999) == 1)
        #expect(WallClock.seconds(of: 1_000) == 1)
        #expect(WallClock.seconds(of: 0) == 0)
        #expect(WallClock.seconds(of: -1) == -1)
        #expect(WallClock.seconds(of: -1_000) == -1)
        #expect(WallClock.seconds(of: -1_001) == -2)
        let whole = WallClock { 1_795_612_455 }
        #expect(whole.millisecondsSince1970 == 1_795_612_455_000 && whole.secondsSince1970 == 1_795_612_455)
        let fine = WallClock.milliseconds { 1_795_612_455_987 }
        #expect(fine.secondsSince1970 == 1_795_612_455)
    }
}
