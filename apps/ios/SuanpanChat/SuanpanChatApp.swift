import SwiftUI

@main
struct SuanpanChatApp: App {
    var body: some Scene {
        WindowGroup { ChatView() }
    }
}
