/*
 * A single Elasticsearch node in one JVM, built only from Maven Central artifacts, for spillway's
 * tests (scripts/services/elasticsearch.sh compiles and runs it).
 *
 * The Elasticsearch distribution starts a node through org.elasticsearch.bootstrap.Elasticsearch,
 * which loads the modules (netty4 for HTTP among them) from a modules/ directory into their own
 * module layers. Maven Central has the server jar and the netty4 module jar but no distribution,
 * so this launcher loads the netty4 plugin class from the classpath instead, the way the test
 * framework's MockNode does: it lives in the package org.elasticsearch.node (plain classpath, no
 * module layer) to reach the package-private NodeConstruction/NodeServiceProvider, and hands the
 * node a MockPluginsService (test framework jar) with the classpath plugins.
 * Maven Central has no other module of 8.x (rest-root, mapper-extras, analysis-common,
 * lang-painless, reindex, aggregations, parent-join, data-streams: "Could not find artifact"), so
 * `GET /` and `HEAD /`, which the rest-root module serves, are served by RootPlugin below with the
 * same body as Elasticsearch's (name, cluster_name, cluster_uuid, version.number, ..., tagline):
 * clients read the version from it.
 * Not done here, as it is not a production node: no security manager or entitlements, no
 * bootstrap checks, no x-pack (no security: plain HTTP without authentication).
 *
 * Arguments: Elasticsearch settings as key=value, applied over the defaults below.
 * Stops cleanly on SIGTERM/SIGINT.
 */
package org.elasticsearch.node;

import org.elasticsearch.Build;
import org.elasticsearch.client.internal.node.NodeClient;
import org.elasticsearch.cluster.ClusterState;
import org.elasticsearch.cluster.metadata.IndexNameExpressionResolver;
import org.elasticsearch.cluster.node.DiscoveryNodes;
import org.elasticsearch.cluster.service.ClusterService;
import org.elasticsearch.common.io.stream.NamedWriteableRegistry;
import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.ClusterSettings;
import org.elasticsearch.common.settings.IndexScopedSettings;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.common.settings.SettingsFilter;
import org.elasticsearch.env.Environment;
import org.elasticsearch.features.NodeFeature;
import org.elasticsearch.index.IndexVersion;
import org.elasticsearch.plugins.ActionPlugin;
import org.elasticsearch.plugins.MockPluginsService;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.plugins.PluginsLoader;
import org.elasticsearch.plugins.PluginsService;
import org.elasticsearch.rest.BaseRestHandler;
import org.elasticsearch.rest.RestController;
import org.elasticsearch.rest.RestHandler;
import org.elasticsearch.rest.RestRequest;
import org.elasticsearch.rest.RestResponse;
import org.elasticsearch.rest.RestStatus;
import org.elasticsearch.transport.netty4.Netty4Plugin;
import org.elasticsearch.xcontent.XContentBuilder;

import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.Predicate;
import java.util.function.Supplier;

public final class SpillwayEsNode extends Node {

    private SpillwayEsNode(Environment environment, Collection<Class<? extends Plugin>> classpathPlugins) {
        super(NodeConstruction.prepareConstruction(environment, null, new NodeServiceProvider() {
            @Override
            PluginsService newPluginService(Environment env, PluginsLoader pluginsLoader) {
                return new MockPluginsService(env.settings(), env, classpathPlugins);
            }
        }, true));
    }

    public static void main(String[] args) throws Exception {
        Settings.Builder builder = Settings.builder()
            .put("cluster.name", "spillway-test")
            .put("node.name", "spillway-es")
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", "9280")
            .put("transport.port", "9380")
            // Test machines may have little free disk: never block writes on watermarks.
            .put("cluster.routing.allocation.disk.threshold_enabled", false);
        for (String arg : args) {
            int eq = arg.indexOf('=');
            if (eq <= 0) {
                System.err.println("SpillwayEsNode: expected key=value, got: " + arg);
                System.exit(2);
            }
            builder.put(arg.substring(0, eq), arg.substring(eq + 1));
        }
        Settings settings = builder.build();
        if (settings.get("path.home") == null) {
            System.err.println("SpillwayEsNode: path.home=... is required");
            System.exit(2);
        }

        Environment environment = InternalSettingsPreparer.prepareEnvironment(settings, Map.of(), null, () -> "spillway-es");
        LogConfigurator.setNodeName(Node.NODE_NAME_SETTING.get(environment.settings()));
        LogConfigurator.setClusterName(environment.settings().get("cluster.name"));
        LogConfigurator.configure(environment, true);

        Node node = new SpillwayEsNode(environment, List.of(Netty4Plugin.class, RootPlugin.class));
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.prepareForClose();
                node.close();
                node.awaitClose(20, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                stopped.countDown();
            }
        }, "spillway-es-shutdown"));
        try {
            node.start();
        } catch (Throwable t) {
            t.printStackTrace();
            // halt: the shutdown hook would wait on a node that never started.
            Runtime.getRuntime().halt(1);
        }
        // The node's threads are daemons: keep the JVM alive until a signal runs the hook.
        stopped.await();
    }

    /** Serves `GET /` and `HEAD /` as the rest-root module of the distribution does. */
    public static final class RootPlugin extends Plugin implements ActionPlugin {
        private final AtomicReference<ClusterService> clusterService = new AtomicReference<>();

        public RootPlugin() {}

        @Override
        public Collection<?> createComponents(PluginServices services) {
            clusterService.set(services.clusterService());
            return List.of();
        }

        @Override
        public Collection<RestHandler> getRestHandlers(
            Settings settings,
            NamedWriteableRegistry namedWriteableRegistry,
            RestController restController,
            ClusterSettings clusterSettings,
            IndexScopedSettings indexScopedSettings,
            SettingsFilter settingsFilter,
            IndexNameExpressionResolver indexNameExpressionResolver,
            Supplier<DiscoveryNodes> nodesInCluster,
            Predicate<NodeFeature> clusterSupportsFeature
        ) {
            return List.of(new BaseRestHandler() {
                @Override
                public String getName() {
                    return "spillway_main_action";
                }

                @Override
                public List<Route> routes() {
                    return List.of(new Route(RestRequest.Method.GET, "/"), new Route(RestRequest.Method.HEAD, "/"));
                }

                @Override
                protected RestChannelConsumer prepareRequest(RestRequest request, NodeClient client) {
                    boolean pretty = request.paramAsBoolean("pretty", true);
                    return channel -> {
                        ClusterService cs = clusterService.get();
                        ClusterState state = cs.state();
                        Build build = Build.current();
                        XContentBuilder b = channel.newBuilder();
                        if (pretty) {
                            b.prettyPrint().lfAtEnd();
                        }
                        b.startObject();
                        b.field("name", cs.getNodeName());
                        b.field("cluster_name", state.getClusterName().value());
                        b.field("cluster_uuid", state.metadata().clusterUUID());
                        b.startObject("version")
                            .field("number", build.qualifiedVersion())
                            .field("build_flavor", build.flavor())
                            .field("build_type", build.type().displayName())
                            .field("build_hash", build.hash())
                            .field("build_date", build.date())
                            .field("build_snapshot", build.isSnapshot())
                            .field("lucene_version", IndexVersion.current().luceneVersion().toString())
                            .field("minimum_wire_compatibility_version", build.minWireCompatVersion())
                            .field("minimum_index_compatibility_version", build.minIndexCompatVersion())
                            .endObject();
                        b.field("tagline", "You Know, for Search");
                        b.endObject();
                        channel.sendResponse(new RestResponse(RestStatus.OK, b));
                    };
                }
            });
        }
    }
}
