import CountersignConfiguration

extension PostgresStoreConfiguration {
    /// The store's settings as the configuration file gave them (`store: { kind: postgres, … }`).
    public init(_ settings: ServerConfiguration.Postgres) {
        self.init(
            host: settings.host, port: settings.port, database: settings.database, user: settings.user, passwordFile: settings.passwordFile,
            poolSize: settings.poolSize, tls: TLS(rawValue: settings.tls) ?? .require, caFile: settings.caFile
        )
        self.operationTimeout = settings.timeout
        self.lostAfter = settings.lostAfter
    }
}
