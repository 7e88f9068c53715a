package dev.paywatch.devstack;

import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.node.ClasspathPluginsNode;
import org.elasticsearch.node.Node;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.transport.netty4.Netty4Plugin;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * Boots one genuine Elasticsearch 8.x node inside this JVM, for local development and tests.
 *
 * <p>Why: Elastic publishes the server, the Netty4 HTTP transport and the test framework to Maven
 * Central, but no distribution archive. {@link ClasspathPluginsNode} runs a real {@link Node} with
 * plugins taken from the classpath instead of a plugins directory (the trick of the test
 * framework's MockNode, without its test-only mocks).
 *
 * <p>Usage: {@code java -cp <libs>/*:<classes> dev.paywatch.devstack.LocalEsNode HOME HTTP_PORT TRANSPORT_PORT [CLUSTER]}
 * Writes HOME/node.ready when the HTTP port is bound; SIGTERM closes the node cleanly.
 */
public final class LocalEsNode {
    private LocalEsNode() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 3) {
            System.err.println("usage: LocalEsNode HOME HTTP_PORT TRANSPORT_PORT [CLUSTER_NAME]");
            System.exit(2);
        }
        Path home = Path.of(args[0]).toAbsolutePath();
        String httpPort = args[1];
        String transportPort = args[2];
        String clusterName = args.length > 3 ? args[3] : "paywatch-dev";
        Files.createDirectories(home.resolve("data"));
        Files.createDirectories(home.resolve("logs"));
        Files.deleteIfExists(home.resolve("node.ready"));

        Settings settings = Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("cluster.name", clusterName)
            .put("node.name", "paywatch-local-" + httpPort)
            .put("network.host", "127.0.0.1")
            .put("http.port", httpPort)
            .put("transport.port", transportPort)
            .put("discovery.type", "single-node")
            // a dev box's disk is often >90% full; do not turn indices read-only under us
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .put("action.auto_create_index", true)
            .build();

        LogConfigurator.configureESLogging();
        LogConfigurator.configureWithoutConfig(settings);

        List<Class<? extends Plugin>> plugins = new ArrayList<>();
        plugins.add(Netty4Plugin.class);
        plugins.add(CompatPlugin.class);

        Node node = new ClasspathPluginsNode(settings, plugins);
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(20, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                stopped.countDown();
            }
        }, "paywatch-es-shutdown"));
        node.start();
        Files.writeString(home.resolve("node.ready"), httpPort + "\n", StandardCharsets.UTF_8);
        System.out.println("paywatch-es: node started, http=127.0.0.1:" + httpPort);
        stopped.await();
    }
}
