/*
 * Runs one OpenSearch node in this JVM for spillway's tests, the way OpenSearch's own
 * integration tests do (a Node built from Settings plus classpath plugins), without the
 * distribution's bootstrap (no bootstrap checks, no security manager, no native controller).
 *
 * Started by scripts/services/opensearch.sh, which passes everything as system properties:
 *   -Dspillway.plugins=a.b.Plugin,c.d.Plugin   plugin classes to load from the classpath
 *   -Dspillway.setting.KEY=VALUE               node settings (path.home, http.port, ...);
 *                                              they override the defaults set below
 * The node runs until the JVM gets SIGTERM/SIGINT, then closes cleanly.
 */

import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.plugins.Plugin;

import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

public final class SpillwayTestNode {
    private static final String SETTING_PREFIX = "spillway.setting.";

    public static void main(String[] args) {
        try {
            run();
        } catch (Throwable t) {
            // The stack trace first, then a short reason last, where `start` shows the log's tail.
            t.printStackTrace();
            StringBuilder reason = new StringBuilder(String.valueOf(t));
            for (Throwable c = t.getCause(); c != null && c != c.getCause(); c = c.getCause()) {
                reason.append("\n[spillway]   caused by: ").append(c);
            }
            System.err.println("[spillway] the node failed to start: " + reason);
            System.exit(1);
        }
    }

    private static void run() throws Exception {
        Settings.Builder builder = Settings.builder()
            .put("cluster.name", "spillway-test")
            .put("node.name", "spillway-test-node")
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.type", "netty4")
            .put("transport.type", "netty4")
            // A busy or small test disk must never block writes or shard allocation.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .put("action.auto_create_index", true);

        Map<String, String> overrides = new TreeMap<>();
        for (String name : System.getProperties().stringPropertyNames()) {
            if (name.startsWith(SETTING_PREFIX)) {
                overrides.put(name.substring(SETTING_PREFIX.length()), System.getProperty(name));
            }
        }
        overrides.forEach(builder::put);
        Settings settings = builder.build();
        if (!settings.hasValue("path.home")) {
            throw new IllegalArgumentException("-D" + SETTING_PREFIX + "path.home=... is required");
        }

        Path configDir = Paths.get(settings.get("path.home")).resolve("config");
        String nodeName = settings.get("node.name");
        Environment environment = InternalSettingsPreparer.prepareEnvironment(
            settings, Collections.emptyMap(), configDir, () -> nodeName);

        // As the distribution's Bootstrap does: log4j2.properties from the config directory,
        // with OpenSearch's own layout plugins and the node name in each line.
        LogConfigurator.registerErrorListener();
        LogConfigurator.setNodeName(nodeName);
        LogConfigurator.configure(environment);

        List<Class<? extends Plugin>> plugins = new ArrayList<>();
        for (String name : System.getProperty("spillway.plugins", "").split(",")) {
            if (!name.isBlank()) {
                plugins.add(Class.forName(name.trim()).asSubclass(Plugin.class));
            }
        }

        SpillwayNode node = new SpillwayNode(environment, plugins);
        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                if (!node.awaitClose(30, TimeUnit.SECONDS)) {
                    System.err.println("[spillway] node did not close within 30s");
                }
            } catch (Exception e) {
                System.err.println("[spillway] error while closing the node: " + e);
            } finally {
                closed.countDown();
            }
        }, "spillway-node-shutdown"));

        node.start();
        System.out.println("[spillway] node " + nodeName + " started with plugins " + plugins
            + " and settings " + overrides);
        closed.await();
    }
}
