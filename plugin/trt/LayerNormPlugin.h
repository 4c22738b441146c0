// LayerNormPlugin.h - TensorRT plugin "LayerNorm" (version "1", namespace ""), contract in
// mobilevit_trt/plugin_spec.py: inputs x [..., C] (FP32/FP16), gamma [C] FP32, beta [C] FP32; output like x;
// field epsilon (FLOAT32).
#ifndef MVT_LAYERNORM_PLUGIN_H
#define MVT_LAYERNORM_PLUGIN_H

#include "mvtPluginCommon.h"

MVT_DEPRECATION_PUSH

namespace mvt
{
namespace plugin
{

class LayerNormPlugin final : public nvinfer1::IPluginV2DynamicExt
{
public:
    explicit LayerNormPlugin(float epsilon);
    // From serialize(); throws std::invalid_argument on a malformed buffer.
    LayerNormPlugin(void const* data, size_t length);
    ~LayerNormPlugin() override = default;

    // IPluginV2
    char const* getPluginType() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    int32_t getNbOutputs() const noexcept override;
    int32_t initialize() noexcept override;
    void terminate() noexcept override;
    size_t getSerializationSize() const noexcept override;
    void serialize(void* buffer) const noexcept override;
    void destroy() noexcept override;
    void setPluginNamespace(char const* pluginNamespace) noexcept override;
    char const* getPluginNamespace() const noexcept override;

    // IPluginV2Ext
    nvinfer1::DataType getOutputDataType(
        int32_t index, nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;

    // IPluginV2DynamicExt
    nvinfer1::IPluginV2DynamicExt* clone() const noexcept override;
    nvinfer1::DimsExprs getOutputDimensions(int32_t outputIndex, nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(
        int32_t pos, nvinfer1::PluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept override;
    void configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(nvinfer1::PluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::PluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;

private:
    float mEpsilon;
    std::string mNamespace;
};

class LayerNormPluginCreator final : public nvinfer1::IPluginCreator
{
public:
    LayerNormPluginCreator();
    ~LayerNormPluginCreator() override = default;

    char const* getPluginName() const noexcept override;
    char const* getPluginVersion() const noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
    nvinfer1::IPluginV2* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc) noexcept override;
    nvinfer1::IPluginV2* deserializePlugin(
        char const* name, void const* serialData, size_t serialLength) noexcept override;
    void setPluginNamespace(char const* pluginNamespace) noexcept override;
    char const* getPluginNamespace() const noexcept override;

private:
    std::vector<nvinfer1::PluginField> mFields;
    nvinfer1::PluginFieldCollection mFieldCollection;
    std::string mNamespace;
};

} // namespace plugin
} // namespace mvt

MVT_DEPRECATION_POP

#endif // MVT_LAYERNORM_PLUGIN_H
