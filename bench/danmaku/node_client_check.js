// Used by tests/danmaku/test_node_client.py: a real socket.io-client joins, comments,
// and prints what it received as one JSON line.
const { io } = require("socket.io-client");
const [url, token, room, text] = process.argv.slice(2);
const socket = io(url + "/live", { auth: { token, room }, transports: ["websocket"], reconnection: false });
const out = { joined: null, ack: null, batches: [], error: null };
const done = (code) => { console.log(JSON.stringify(out)); socket.close(); process.exit(code); };
setTimeout(() => { out.error = "timeout"; done(2); }, 10000);
socket.on("connect_error", (err) => { out.error = { message: err.message, data: err.data }; done(0); });
socket.on("joined", (j) => {
  out.joined = j;
  socket.emit("comment", { text }, (ack) => { out.ack = ack; });
});
socket.on("comments", (batch) => {
  out.batches.push(batch);
  if (batch.comments.some((c) => c.text === text)) done(0);
});
