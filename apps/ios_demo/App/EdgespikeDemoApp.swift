import SwiftUI

@main
struct EdgespikeDemoApp: App {
    @State private var chat = ChatModel()

    var body: some Scene {
        WindowGroup {
            ChatView(chat: chat)
                .task { await chat.load() }
        }
    }
}
