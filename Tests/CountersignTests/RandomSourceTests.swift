import CountersignServer
import Testing

@Suite("The system random source")
struct RandomSourceTests {
    @Test("gives exactly the bytes asked for, every length, and different bytes each time")
    func lengths() {
        for count in 0...40 {
            #expect(RandomSource.system.bytes(count).count == count)
        }
        let draws = (0..<4).map { _ in RandomSource.system.bytes(19) }
        #expect(Set(draws).count == 4)
        // Every byte position is used (a word's high bytes too): over many draws each position varies.
        let many = (0..<64).map { _ in RandomSource.system.bytes(19) }
        for position in 0..<19 {
            #expect(Set(many.map { $0[position] }).count > 8, "position \(position)")
        }
    }
}
